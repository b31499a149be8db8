//! Starting and stopping a host: used by `ferry serve`, the demo, the benchmark and the tests alike, so all
//! of them exercise the real server on a real socket.

use crate::app::App;
use crate::config::Config;
use crate::store::{Clock, SystemClock};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A host serving in the background.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The webhook URL of an endpoint.
    pub fn webhook_url(&self, endpoint_id: &str) -> String {
        format!("{}/webhooks/messenger/{endpoint_id}", self.url())
    }

    /// Waits until every accepted event finished its turn and left the inbox (or `timeout` passes); true
    /// when idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if !wait_idle(&self.app, timeout).await {
            return false;
        }
        while self.app.core.journal.waiting() > 0 || self.app.dispatcher.pending() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Stops accepting, lets requests in flight finish, and waits for turns in flight up to `grace`; turns
    /// not started stay in the inbox for the next start.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.context("server task failed")??;
        drain(&self.app, grace).await;
        Ok(())
    }
}

/// Builds the app and activates the endpoints' plugins (compiling off the async threads).
async fn new_app(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<App>> {
    let app = App::new(config, clock)?;
    let restoring = Arc::clone(&app);
    tokio::task::spawn_blocking(move || restoring.restore_plugins())
        .await
        .context("plugin loading panicked")?
        .context("cannot load the transformer plugins")?;
    // Only now, with plugins active, may turns (first those a restart left in the inbox) run.
    let waiting = app.core.journal.waiting();
    if waiting > 0 {
        tracing::info!(waiting, "resuming events left in the inbox");
    }
    app.inbox.start();
    Ok(app)
}

/// Starts a host on `listener` (bind 127.0.0.1:0 in tests).
pub async fn start(config: Config, listener: TcpListener) -> anyhow::Result<Running> {
    start_with_clock(config, listener, Arc::new(SystemClock)).await
}

/// [`start`] with a clock of the caller's (tests move time by hand to expire sessions).
pub async fn start_with_clock(
    config: Config,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    let app = new_app(config, clock).await?;
    spawn_retention(Arc::clone(&app));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::server::serve(
        Arc::clone(&app),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    Ok(Running {
        addr,
        app,
        stop: Some(stop),
        task,
    })
}

/// `ferry serve`: binds the configured address and serves until `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen = config.server.listen.0;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let endpoints: Vec<String> = config
        .endpoints
        .iter()
        .map(|e| e.id().to_string())
        .collect();
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let app = new_app(config, Arc::new(SystemClock)).await?;
    spawn_retention(Arc::clone(&app));
    let bound = listener.local_addr().unwrap_or(listen);
    tracing::info!(listen = %bound, ?endpoints, "ferry is serving");
    // On stdout too, for scripts and tests that bind port 0 and need the port.
    println!("listening on http://{bound}");
    crate::server::serve(Arc::clone(&app), listener, shutdown).await?;
    drain(&app, grace).await;
    Ok(())
}

/// After the server stopped accepting: no new turn starts, turns in flight get `grace` to finish, then the
/// last transcripts and inbox completions are written. What did not finish resumes at the next start.
async fn drain(app: &App, grace: Duration) {
    app.core.stop_starting_turns();
    tracing::info!(
        in_flight = app.dispatcher.pending(),
        "stopped accepting; finishing turns in flight"
    );
    if !wait_idle(app, grace).await {
        tracing::warn!(
            in_flight = app.dispatcher.pending(),
            "turns still running at the shutdown deadline stay in the inbox and resume at the next start"
        );
    }
    if let Err(e) = app.core.db.flush() {
        tracing::error!(error = %e, "last transcripts not stored at shutdown");
    }
    if let Err(e) = app.core.journal.sync().await {
        tracing::error!(error = %e, "last inbox completions not stored at shutdown");
    }
    tracing::info!(
        waiting = app.core.journal.waiting(),
        "stopped; events waiting in the inbox"
    );
}

async fn wait_idle(app: &App, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while app.dispatcher.pending() > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The retention job: hourly, deletes transcripts and contacts older than each endpoint's `retention_days`.
fn spawn_retention(app: Arc<App>) {
    let weak = Arc::downgrade(&app);
    drop(app);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every.tick().await;
            let Some(app) = weak.upgrade() else { return };
            let _ = tokio::task::spawn_blocking(move || app.apply_retention()).await;
        }
    });
}
