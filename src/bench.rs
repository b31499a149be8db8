//! `ferry bench`: a load driver. It starts the host (echo flow) and the Graph API emulator on loopback,
//! posts signed events from many users at full speed, and reports acknowledged events per second, p50/p99
//! acknowledgement latency, completed turns per second and peak memory. Every acknowledged event is in the
//! durable inbox (committed with fsync) before its 200, as in production.
//!
//! The driver writes prebuilt, presigned HTTP/1.1 requests on keep-alive connections, as wrk does.
//! Everything runs in this one process on the same cores: the figures include the driver's and the
//! emulator's own cost, so the host alone does better.

use crate::config::Config;
use crate::sim::{events, Sim, SimConfig, SimPage};
use anyhow::bail;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PAGE: &str = "1234567890";
const TOKEN: &str = "bench-page-token";
const SECRET: &str = "bench-app-secret";

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Events to post.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Distinct users the events come from.
    #[arg(long, default_value_t = 1_000)]
    pub users: usize,
    /// Concurrent webhook connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Send typing indicators (one extra Send API call per message).
    #[arg(long)]
    pub typing: bool,
    /// Do not store transcripts (`data_protection.collect_conversations = false`).
    #[arg(long)]
    pub no_transcripts: bool,
    /// Run this transformer plugin on every turn (all the hooks it exports).
    #[arg(long)]
    pub plugin: Option<std::path::PathBuf>,
}

pub struct BenchReport {
    pub events: usize,
    pub acked_per_sec: f64,
    pub ack_p50_us: f64,
    pub ack_p99_us: f64,
    pub turns_per_sec: f64,
    /// CPU time of the whole bench process (host, emulator and driver) per event, in microseconds.
    pub cpu_per_turn_us: f64,
    pub peak_rss_mib: f64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    println!(
        "ferry bench: {} events from {} users over {} connections, echo flow, typing indicators {}, transcripts {}, plugin {}",
        args.events,
        args.users,
        args.connections,
        if args.typing { "on" } else { "off" },
        if args.no_transcripts { "off" } else { "on" },
        args.plugin.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into())
    );
    let r = measure(&args).await?;
    println!(
        "acknowledged events/s : {:.0} (each durable in the inbox before its 200)",
        r.acked_per_sec
    );
    println!(
        "ack latency p50 / p99 : {:.0} us / {:.0} us",
        r.ack_p50_us, r.ack_p99_us
    );
    println!("completed turns/s     : {:.0}", r.turns_per_sec);
    println!(
        "CPU per turn          : {:.0} us (the whole bench process: host, emulator and driver)",
        r.cpu_per_turn_us
    );
    println!("peak RSS (whole bench): {:.0} MiB", r.peak_rss_mib);
    Ok(())
}

pub async fn measure(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let sim_cfg = SimConfig {
        pages: vec![SimPage::new(PAGE, TOKEN, Some(SECRET), "Bench")],
        accept_unknown_users: true,
        record_calls: false,
        ..SimConfig::default()
    };
    // The emulator and the driver stand for Meta's machines: each gets a runtime of its own, as wrk and
    // Meta would be processes of their own, so that their tasks do not queue behind the host's.
    let sim_runtime = SideRuntime::start("bench-sim")?;
    let driver_runtime = SideRuntime::start("bench-driver")?;
    let sim = sim_runtime
        .spawn(async move { Sim::start(sim_cfg, TcpListener::bind("127.0.0.1:0").await?).await })
        .await??;
    let data_dir = std::env::temp_dir().join(format!("ferry-bench-{}", std::process::id()));
    let transformer = match &args.plugin {
        Some(path) => format!(
            "[endpoint.transformer]\nplugin = {:?}\n",
            path.display().to_string()
        ),
        None => String::new(),
    };
    let config = Config::parse(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = {data_dir:?}
[graph]
base_url = "{}"
[[endpoint]]
id = "bench"
page_id = "{PAGE}"
page_access_token = "{TOKEN}"
app_secret = "{SECRET}"
verify_token = "v"
[endpoint.profiles]
request = false
[endpoint.messenger]
typing_indicators = {}
message_delay_ms = 0
mark_seen = false
[endpoint.delivery]
text_per_second = 1000000000
[endpoint.data_protection]
collect_conversations = {transcripts}
[endpoint.flow]
kind = "echo"
{transformer}
"#,
        sim.url(),
        args.typing,
        data_dir = data_dir.display().to_string(),
        transcripts = !args.no_transcripts,
    ))?;
    let host = crate::run::start(config, TcpListener::bind("127.0.0.1:0").await?).await?;

    // Requests are built and signed before the clock starts, as wrk does: the driver should measure the
    // host, not itself.
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..args.events)
            .map(|i| {
                let psid = format!("{}", 10_000_000 + i % args.users.max(1));
                let item = events::text(PAGE, &psid, &format!("m.{i}"), "hello", i as u64 + 1);
                let body = events::to_meta_bytes(&events::wrap(PAGE, vec![item]));
                signed_request(host.addr, "bench", &body)
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let cpu_started = crate::transformer::cli::process_cpu_time();
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let (requests, next) = (Arc::clone(&requests), Arc::clone(&next));
        let addr = host.addr;
        tasks.push(driver_runtime.spawn(async move { post_all(addr, &requests, &next).await }));
    }
    let mut latencies = Vec::with_capacity(args.events);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let acked_in = started.elapsed();
    if !host.wait_idle(Duration::from_secs(600)).await {
        bail!("turns did not finish");
    }
    let turns_in = started.elapsed();
    let cpu = crate::transformer::cli::process_cpu_time().saturating_sub(cpu_started);
    let sent = sim.counters().messages as usize;
    if sent != args.events {
        bail!(
            "the emulator received {sent} messages for {} events",
            args.events
        );
    }
    if args.plugin.is_some() {
        check_every_turn_ran_the_plugin(host.app.metrics(), args.events)?;
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let report = BenchReport {
        events: args.events,
        acked_per_sec: args.events as f64 / acked_in.as_secs_f64(),
        ack_p50_us: pct(0.50),
        ack_p99_us: pct(0.99),
        turns_per_sec: args.events as f64 / turns_in.as_secs_f64(),
        cpu_per_turn_us: cpu.as_secs_f64() * 1e6 / args.events as f64,
        peak_rss_mib: peak_rss_mib(),
    };
    host.stop(Duration::from_secs(5)).await?;
    sim.shutdown();
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(report)
}

/// A one-thread runtime for one side of the benchmark that is not the host. It is shut down in the
/// background when dropped: a runtime dropped inside another one (as on an early error return) would panic.
struct SideRuntime {
    handle: tokio::runtime::Handle,
    /// Taken only by `drop`.
    runtime: Option<tokio::runtime::Runtime>,
}

impl SideRuntime {
    fn start(name: &str) -> std::io::Result<SideRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()?;
        Ok(SideRuntime {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }
}

impl Drop for SideRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A complete HTTP/1.1 webhook POST, signed, ready to write to a keep-alive connection.
fn signed_request(addr: SocketAddr, endpoint_id: &str, body: &[u8]) -> Vec<u8> {
    let sig = crate::messenger::signature::sign_sha256(SECRET, body);
    let mut request = format!(
        "POST /webhooks/messenger/{endpoint_id} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-hub-signature-256: {sig}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// One keep-alive connection posting requests (taken from the shared list in order) one after another.
/// Returns each acknowledgement's latency in microseconds; any answer other than 200 is an error.
async fn post_all(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    next: &AtomicUsize,
) -> anyhow::Result<Vec<f64>> {
    let mut conn = TcpStream::connect(addr).await?;
    conn.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let mut latencies = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(request) = requests.get(i) else {
            return Ok(latencies);
        };
        let t = Instant::now();
        conn.write_all(request).await?;
        let status = read_response(&mut conn, &mut buf).await?;
        if status != 200 {
            bail!("event {i} answered {status}");
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
    }
}

/// Reads one HTTP/1.1 response (headers and a `content-length` body) and returns its status. Bytes of
/// a following response stay in `buf`.
async fn read_response(conn: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    loop {
        if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..head_end])?;
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("malformed status line in {head:?}"))?;
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .ok_or_else(|| anyhow::anyhow!("response without content-length: {head:?}"))?;
            let total = head_end + 4 + length;
            while buf.len() < total {
                read_more(conn, buf).await?;
            }
            buf.drain(..total);
            return Ok(status);
        }
        read_more(conn, buf).await?;
    }
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = conn.read(&mut chunk).await?;
    if n == 0 {
        bail!("the host closed the connection");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// VmHWM of this process, in MiB (0 where /proc is not available).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// A plugin run counts only if every turn created its instance and ran each hook without an error: a
/// failing plugin would make turns look cheaper than they are.
fn check_every_turn_ran_the_plugin(
    metrics: &crate::metrics::Metrics,
    events: usize,
) -> anyhow::Result<()> {
    let endpoint = ("endpoint", "bench");
    let instances = metrics.counter("ferry_plugin_instantiations_total", &[endpoint]);
    if instances != events as u64 {
        bail!("the plugin was instantiated {instances} times for {events} turns");
    }
    for hook in ["input", "output", "execution_finished"] {
        let calls =
            metrics.histogram_count("ferry_hook_duration_seconds", &[endpoint, ("hook", hook)]);
        if calls != 0 && calls != events as u64 {
            bail!("the {hook} hook ran {calls} times for {events} turns");
        }
    }
    let errors: Vec<String> = metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("ferry_hook_errors_total{"))
        .map(str::to_string)
        .collect();
    if !errors.is_empty() {
        bail!("plugin hooks failed: {}", errors.join("; "));
    }
    Ok(())
}
