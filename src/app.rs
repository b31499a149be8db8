//! The running host: endpoints built from the configuration, and what all turns share.

use crate::config::{Config, EndpointConfig, Secret};
use crate::dispatch::{Dispatcher, TurnRuntime};
use crate::flow::{Flow, FlowEndpoint};
use crate::inbox::Inbox;
use crate::messenger::graph::{http_client, GraphClient, PageAuth};
use crate::messenger::rate_limit::PageLimits;
use crate::metrics::Metrics;
use crate::pipeline::{self, Job};
use crate::profiles::ProfileCache;
use crate::store::{Clock, Db, Journal, SessionPolicy};
use crate::transformer::hooks::EndpointPlugin;
use crate::transformer::storage::SessionStorage;
use crate::transformer::store::PluginStore;
use crate::transformer::{EndpointInfo, PluginError, Runtime};
use futures::future::BoxFuture;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Serialises turns per (endpoint id, user id).
pub type TurnDispatcher = Dispatcher<(Arc<str>, String), Job, fn(Job) -> BoxFuture<'static, ()>>;

/// What every turn of every endpoint shares.
pub struct Core {
    pub graph: GraphClient,
    pub metrics: Arc<Metrics>,
    /// Sessions, contacts, transcripts, plugin session storage.
    pub db: Arc<Db>,
    /// The inbox of accepted events, each turn's progress, de-duplication keys and dead letters.
    pub journal: Arc<Journal>,
    /// Plugins' `session-storage`, scoped per (endpoint, user, session), in the database.
    pub session_storage: Arc<dyn SessionStorage>,
    /// (page id, endpoint id, business) of every endpoint: whose contacts may be merged.
    pub business_pages: Vec<(String, String, String)>,
    /// Set on shutdown: no new turn starts (waiting events stay in the inbox).
    stopping: AtomicBool,
}

impl Core {
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn stop_starting_turns(&self) {
        self.stopping.store(true, Ordering::Release);
    }
}

/// One configured endpoint (one Facebook Page) with its backend and caches.
pub struct Endpoint {
    pub id: Arc<str>,
    pub config: EndpointConfig,
    pub page: PageAuth,
    pub flow: Flow,
    pub flow_endpoint: FlowEndpoint,
    pub profiles: ProfileCache,
    pub extra_profile_fields: Vec<&'static str>,
    /// The WebAssembly transformer this endpoint runs (if any), hot-swappable.
    pub plugin: EndpointPlugin,
    pub session_policy: SessionPolicy,
    /// The Page's Send API rate limits.
    pub limits: PageLimits,
}

impl Endpoint {
    fn new(
        config: EndpointConfig,
        flow_http: reqwest::Client,
        max_session_minutes: u64,
    ) -> Endpoint {
        let id: Arc<str> = Arc::from(config.id());
        let page = PageAuth::new(
            &config.page_id,
            &config.page_access_token,
            Some(&config.app_secret),
        );
        let flow = Flow::new(config.flow.kind, config.flow.url.as_deref(), flow_http);
        let flow_endpoint = FlowEndpoint {
            id: id.to_string(),
            channel: "messenger",
            page_id: config.page_id.0.clone(),
        };
        let profiles = ProfileCache::new(Duration::from_secs(config.profiles.cache_ttl_secs));
        let extra_profile_fields = config
            .profiles
            .extra_fields
            .iter()
            .map(|f| f.as_str())
            .collect();
        let plugin = EndpointPlugin::new(
            Arc::clone(&id),
            &config.transformer,
            plugin_endpoint_info(&config),
        );
        let max_ms = max_session_minutes as i64 * 60_000;
        let idle_ms = (config.session.expiration_minutes as i64 * 60_000).min(max_ms);
        Endpoint {
            id,
            page,
            flow,
            flow_endpoint,
            profiles,
            extra_profile_fields,
            plugin,
            session_policy: SessionPolicy { idle_ms, max_ms },
            limits: PageLimits::new(
                config.delivery.text_per_second,
                config.delivery.media_per_second,
            ),
            config,
        }
    }

    /// Whether events of this kind start a turn (`[endpoint.messenger] flow_events`).
    pub fn runs_flow_for(&self, kind: &str) -> bool {
        self.config.messenger.flow_events.iter().any(|k| k == kind)
    }
}

/// What a plugin sees of its endpoint: ids and non-secret settings (never tokens, secrets or the flow URL,
/// which may carry credentials).
fn plugin_endpoint_info(config: &EndpointConfig) -> EndpointInfo {
    let settings = json!({
        "page_id": &*config.page_id,
        "profiles": {
            "request": config.profiles.request,
            "extra_fields": config.profiles.extra_fields.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        },
        "messenger": {
            "typing_indicators": config.messenger.typing_indicators,
            "message_delay_ms": config.messenger.message_delay_ms,
            "mark_seen": config.messenger.mark_seen,
        },
        "flow": { "kind": format!("{:?}", config.flow.kind).to_lowercase(), "timeout_ms": config.flow.timeout_ms },
        "transformer": {
            "abort_on_error": config.transformer.abort_on_error,
            "settings": serde_json::to_value(&config.transformer.settings).unwrap_or_default(),
        },
    });
    EndpointInfo {
        id: config.id().to_string(),
        channel: "messenger".into(),
        page_id: config.page_id.0.clone(),
        settings: settings.to_string(),
    }
}

pub struct App {
    pub core: Arc<Core>,
    pub endpoints: HashMap<String, Arc<Endpoint>>,
    pub dispatcher: Arc<TurnDispatcher>,
    /// Feeds accepted events from the journal to the dispatcher.
    pub inbox: Arc<Inbox>,
    /// Where turns run (lower priority than acknowledgements); stops when the app is dropped.
    _turn_runtime: TurnRuntime,
    pub max_body_bytes: usize,
    pub dedup_keep_ms: i64,
    pub admin_token: Option<Secret>,
    pub data_dir: PathBuf,
    /// `server.plugin_instances` and `server.plugin_busy_instances` (0: from the cores).
    plugin_instances: (u32, usize),
    /// Created on first need: hosts without plugins never start a wasm engine.
    plugin_store: Mutex<Option<Arc<PluginStore>>>,
    /// Serialises admin changes to plugins.
    pub admin_lock: tokio::sync::Mutex<()>,
}

impl App {
    /// Opens the database under `server.data_dir` (a clear error when it is unusable) and builds the
    /// endpoints.
    pub fn new(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<App>> {
        let db = Arc::new(Db::open(&config.server.data_dir, Arc::clone(&clock))?);
        let journal = Arc::new(Journal::open(
            &config.server.data_dir,
            clock,
            config.server.max_inbox_events,
        )?);
        // A turn leaves the inbox only once its transcript is stored.
        let weak = Arc::downgrade(&journal);
        db.on_stored(Box::new(move |seqs| {
            if let Some(journal) = weak.upgrade() {
                journal.complete(seqs);
            }
        }));
        Db::spawn_writer(&db);
        let graph_http = http_client(Duration::from_millis(config.graph.timeout_ms));
        // Flow timeouts are enforced per call by `Flow::run`; the client itself only needs a ceiling.
        let flow_http = http_client(Duration::from_secs(3600));
        let core = Arc::new(Core {
            graph: GraphClient::new(graph_http, &config.graph.base_url, &config.graph.version),
            metrics: Arc::new(Metrics::new()),
            session_storage: Arc::new(crate::store::DbSessionStorage(Arc::clone(&db))),
            db,
            journal,
            stopping: AtomicBool::new(false),
            business_pages: config
                .endpoints
                .iter()
                .map(|e| {
                    (
                        e.page_id.0.clone(),
                        e.id().to_string(),
                        e.profiles.business.clone(),
                    )
                })
                .collect(),
        });
        let max_session_minutes = config.server.max_session_minutes;
        let endpoints: HashMap<String, Arc<Endpoint>> = config
            .endpoints
            .into_iter()
            .map(|c| {
                let ep = Endpoint::new(c, flow_http.clone(), max_session_minutes);
                (ep.id.to_string(), Arc::new(ep))
            })
            .collect();
        let handler: fn(Job) -> BoxFuture<'static, ()> = |job| Box::pin(pipeline::run_turn(job));
        let turn_runtime = TurnRuntime::start(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
            config.server.turn_niceness,
        )
        .map_err(|e| anyhow::anyhow!("cannot start the turn threads: {e}"))?;
        let dispatcher = Dispatcher::new(handler, Some(turn_runtime.handle()));
        let inbox = Inbox::new(
            Arc::clone(&core),
            endpoints.clone(),
            Arc::clone(&dispatcher),
            config.server.max_pending_events,
        );
        Ok(Arc::new(App {
            core,
            endpoints,
            dispatcher,
            inbox,
            _turn_runtime: turn_runtime,
            max_body_bytes: config.server.max_body_bytes,
            dedup_keep_ms: config.server.dedup_hours as i64 * 3_600_000,
            admin_token: config.server.admin_token,
            data_dir: config.server.data_dir,
            plugin_instances: (
                config.server.plugin_instances,
                config.server.plugin_busy_instances,
            ),
            plugin_store: Mutex::new(None),
            admin_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// Deletes what each endpoint's data protection settings no longer allow to keep; returns rows deleted.
    pub fn apply_retention(&self) -> usize {
        let mut deleted = 0;
        let longest = self
            .endpoints
            .values()
            .map(|e| e.session_policy.max_ms)
            .max()
            .unwrap_or(0);
        match self.core.db.purge_sessions(longest) {
            Ok(n) => deleted += n,
            Err(e) => tracing::warn!(error = %e, "session purge failed"),
        }
        match self.core.journal.purge_keys(self.dedup_keep_ms) {
            Ok(n) => deleted += n,
            Err(e) => tracing::warn!(error = %e, "de-duplication key purge failed"),
        }
        for ep in self.endpoints.values() {
            let days = ep.config.data_protection.retention_days;
            match self.core.journal.purge_dead_letters(&ep.id, days) {
                Ok(n) => deleted += n,
                Err(e) => tracing::warn!(endpoint = %ep.id, error = %e, "dead letter purge failed"),
            }
        }
        for ep in self.endpoints.values() {
            match self
                .core
                .db
                .apply_retention(&ep.id, ep.config.data_protection.retention_days)
            {
                Ok(n) => deleted += n,
                Err(e) => tracing::warn!(endpoint = %ep.id, error = %e, "retention job failed"),
            }
        }
        if deleted > 0 {
            tracing::info!(
                deleted,
                "retention job deleted old transcripts and contacts"
            );
        }
        deleted
    }

    /// The plugin store, opening it (and starting the wasm engine) on first use.
    pub fn plugin_store(&self) -> Result<Arc<PluginStore>, PluginError> {
        let mut slot = self.plugin_store.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = slot.as_ref() {
            return Ok(Arc::clone(store));
        }
        let (instances, busy) = self.plugin_instances;
        let runtime = match busy {
            0 => Runtime::with_instances(instances, Runtime::default_busy_instances()),
            busy => Runtime::with_instances(instances, busy),
        }?;
        let store = Arc::new(PluginStore::open(&self.data_dir, runtime)?);
        *slot = Some(Arc::clone(&store));
        Ok(store)
    }

    /// At start: activates each endpoint's plugin (from the config file, or the version uploaded before the
    /// restart, loaded from its precompiled artifact). Blocking: may compile.
    pub fn restore_plugins(&self) -> Result<(), PluginError> {
        let stored = self.data_dir.join("plugins").join("endpoints");
        for ep in self.endpoints.values() {
            let config_plugin = ep.config.transformer.plugin.as_deref();
            let has_state = stored.join(format!("{}.json", ep.id)).exists();
            if config_plugin.is_none() && !has_state {
                continue;
            }
            let plugin = self
                .plugin_store()?
                .restore(&ep.id, config_plugin)
                .map_err(|e| PluginError::Io(format!("endpoint `{}`: {e}", ep.id)))?;
            if let Some(p) = &plugin {
                tracing::info!(endpoint = %ep.id, plugin = %p.name, hooks = ?p.info.hooks, "transformer plugin active");
            }
            ep.plugin.set(plugin);
        }
        Ok(())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.core.metrics
    }
}
