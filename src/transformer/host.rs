//! The per-turn store data: WASI (nothing granted), wasi-http behind the
//! policy, the `log` and `session-storage` imports, the memory limiter and
//! the capture of stdout/stderr.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::ferry::transformer::{log as wit_log, session_storage, types as wit_types};
use super::http::HttpPolicy;
use super::storage::{SessionKey, SessionStorage};
use super::types::{Level, Limits, LogSink};

/// Longest log message kept; longer ones are cut.
const MAX_LOG_MESSAGE_BYTES: usize = 8 * 1024;
/// Log entries per turn; further entries are dropped.
const MAX_LOG_ENTRIES_PER_TURN: u32 = 1_000;
/// Bytes of stdout+stderr captured per turn; the rest is discarded.
const MAX_CAPTURED_OUTPUT_BYTES: usize = 64 * 1024;

/// The plugin's log, with a per-turn entry budget.
pub struct TurnLog {
    sink: Arc<dyn LogSink>,
    entries: AtomicU32,
}

impl TurnLog {
    pub fn new(sink: Arc<dyn LogSink>) -> Self {
        TurnLog {
            sink,
            entries: AtomicU32::new(0),
        }
    }

    pub fn write(&self, level: Level, message: &str) {
        let entries = self.entries.fetch_add(1, Ordering::Relaxed);
        if entries < MAX_LOG_ENTRIES_PER_TURN {
            self.sink
                .log(level, truncate(message, MAX_LOG_MESSAGE_BYTES));
        } else if entries == MAX_LOG_ENTRIES_PER_TURN {
            self.sink.log(
                Level::Warn,
                "log entry limit reached; dropping further entries",
            );
        }
    }

    pub fn entries(&self) -> u32 {
        self.entries
            .load(Ordering::Relaxed)
            .min(MAX_LOG_ENTRIES_PER_TURN)
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Enforces the memory limit and records the peak; remembers whether the
/// limit was hit so that the resulting trap can be reported as such.
pub struct MemoryLimiter {
    limit: usize,
    pub peak: usize,
    pub exceeded: bool,
}

impl MemoryLimiter {
    pub fn new(limit: usize) -> Self {
        MemoryLimiter {
            limit,
            peak: 0,
            exceeded: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            // An error (not `Ok(false)`) turns the failed growth into a trap,
            // so a guest cannot keep running after hitting the limit.
            wasmtime::bail!("memory limit of {} bytes exceeded", self.limit);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// Store data of one turn.
pub struct HostState {
    wasi: WasiCtx,
    http_ctx: WasiHttpCtx,
    table: ResourceTable,
    pub http: HttpPolicy,
    pub limiter: MemoryLimiter,
    storage: Arc<dyn SessionStorage>,
    key: SessionKey,
    pub log: Arc<TurnLog>,
    pub output: CapturedOutput,
    pub limits: Arc<Limits>,
    /// When the running hook call must stop (checked at every epoch tick).
    pub deadline: std::time::Instant,
}

impl HostState {
    pub fn new(
        http: HttpPolicy,
        limiter: MemoryLimiter,
        storage: Arc<dyn SessionStorage>,
        key: SessionKey,
        log: Arc<TurnLog>,
        limits: Arc<Limits>,
    ) -> Self {
        let output = CapturedOutput::new(log.clone());
        // No preopens, environment, arguments or network: the guest gets
        // nothing but clocks, randomness and the captured stdout/stderr.
        let wasi = WasiCtx::builder()
            .stdout(output.stream("stdout"))
            .stderr(output.stream("stderr"))
            .build();
        HostState {
            wasi,
            http_ctx: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            http,
            limiter,
            storage,
            key,
            log,
            output,
            limits,
            deadline: std::time::Instant::now(),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}

impl wit_types::Host for HostState {}

impl wit_log::Host for HostState {
    fn log(&mut self, level: wit_log::Level, message: String) {
        let level = match level {
            wit_log::Level::Trace => Level::Trace,
            wit_log::Level::Debug => Level::Debug,
            wit_log::Level::Info => Level::Info,
            wit_log::Level::Warn => Level::Warn,
            wit_log::Level::Error => Level::Error,
        };
        self.log.write(level, &message);
    }
}

impl session_storage::Host for HostState {
    fn get(&mut self) -> Option<String> {
        self.storage.get(&self.key)
    }

    fn set(&mut self, value: String) -> Result<(), String> {
        super::storage::check_session_value(&value)?;
        self.storage.set(&self.key, value)
    }
}

/// Guest stdout and stderr, forwarded line by line to the log at debug
/// level, within a per-turn byte budget.
#[derive(Clone)]
pub struct CapturedOutput {
    inner: Arc<Mutex<OutputState>>,
}

struct OutputState {
    log: Arc<TurnLog>,
    budget: usize,
    pending: Vec<(&'static str, Vec<u8>)>,
}

impl CapturedOutput {
    fn new(log: Arc<TurnLog>) -> Self {
        CapturedOutput {
            inner: Arc::new(Mutex::new(OutputState {
                log,
                budget: MAX_CAPTURED_OUTPUT_BYTES,
                pending: Vec::new(),
            })),
        }
    }

    fn stream(&self, name: &'static str) -> LogPipe {
        LogPipe {
            name,
            output: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutputState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, name: &'static str, bytes: &[u8]) {
        let mut state = self.lock();
        let take = bytes.len().min(state.budget);
        state.budget -= take;
        let pending = state.pending_for(name);
        pending.extend_from_slice(&bytes[..take]);
        let lines = split_complete_lines(pending);
        for line in lines {
            state.emit(name, &line);
        }
    }

    /// Logs unfinished lines, e.g. at the end of a hook call.
    pub fn flush(&self) {
        let mut state = self.lock();
        let pending = std::mem::take(&mut state.pending);
        for (name, line) in pending {
            if !line.is_empty() {
                state.emit(name, &line);
            }
        }
    }
}

impl OutputState {
    fn pending_for(&mut self, name: &'static str) -> &mut Vec<u8> {
        let index = match self.pending.iter().position(|(n, _)| *n == name) {
            Some(index) => index,
            None => {
                self.pending.push((name, Vec::new()));
                self.pending.len() - 1
            }
        };
        &mut self.pending[index].1
    }

    fn emit(&self, name: &str, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        self.log
            .write(Level::Debug, &format!("{name}: {}", text.trim_end()));
    }
}

/// Removes and returns the complete lines (without `\n`) from `pending`.
fn split_complete_lines(pending: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let Some(last_newline) = pending.iter().rposition(|&b| b == b'\n') else {
        return Vec::new();
    };
    let rest = pending.split_off(last_newline + 1);
    let complete = std::mem::replace(pending, rest);
    complete
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// One of the guest's output streams.
#[derive(Clone)]
struct LogPipe {
    name: &'static str,
    output: CapturedOutput,
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.output.write(self.name, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always writable: excess output is discarded, not back-pressured.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.output.write(self.name, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<(Level, String)>>);

    impl LogSink for Collect {
        fn log(&self, level: Level, message: &str) {
            self.0.lock().unwrap().push((level, message.to_string()));
        }
    }

    #[test]
    fn output_is_logged_line_by_line() {
        let sink = Arc::new(Collect::default());
        let output = CapturedOutput::new(Arc::new(TurnLog::new(sink.clone())));
        output.write("stdout", b"hello\nwor");
        output.write("stderr", b"oops\n");
        output.write("stdout", b"ld");
        output.flush();
        let lines: Vec<String> = sink.0.lock().unwrap().iter().map(|e| e.1.clone()).collect();
        assert_eq!(lines, ["stdout: hello", "stderr: oops", "stdout: world"]);
    }

    #[test]
    fn output_and_log_have_budgets() {
        let sink = Arc::new(Collect::default());
        let log = Arc::new(TurnLog::new(sink.clone()));
        let output = CapturedOutput::new(log.clone());
        output.write("stdout", &vec![b'x'; MAX_CAPTURED_OUTPUT_BYTES * 2]);
        output.flush();
        let logged: usize = sink.0.lock().unwrap().iter().map(|e| e.1.len()).sum();
        assert!(logged <= MAX_LOG_MESSAGE_BYTES);
        for _ in 0..MAX_LOG_ENTRIES_PER_TURN + 10 {
            log.write(Level::Info, "x");
        }
        assert_eq!(
            sink.0.lock().unwrap().len(),
            MAX_LOG_ENTRIES_PER_TURN as usize + 1
        );
        assert_eq!(log.entries(), MAX_LOG_ENTRIES_PER_TURN);
    }

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
