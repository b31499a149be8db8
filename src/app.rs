//! The running host: endpoints built from the configuration, and what all turns share.

use crate::config::{Config, EndpointConfig, Secret};
use crate::dispatch::Dispatcher;
use crate::flow::{Flow, FlowEndpoint};
use crate::messenger::graph::{http_client, GraphClient, PageAuth};
use crate::metrics::Metrics;
use crate::pipeline::{self, Job};
use crate::profiles::ProfileCache;
use crate::sessions::Sessions;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Serialises turns per (endpoint id, user id).
pub type TurnDispatcher = Dispatcher<(Arc<str>, String), Job, fn(Job) -> BoxFuture<'static, ()>>;

/// What every turn of every endpoint shares.
pub struct Core {
    pub graph: GraphClient,
    pub metrics: Arc<Metrics>,
    pub sessions: Sessions,
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
}

impl Endpoint {
    fn new(config: EndpointConfig, flow_http: reqwest::Client) -> Endpoint {
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
        Endpoint {
            id,
            config,
            page,
            flow,
            flow_endpoint,
            profiles,
            extra_profile_fields,
        }
    }

    /// Whether events of this kind start a turn (`[endpoint.messenger] flow_events`).
    pub fn runs_flow_for(&self, kind: &str) -> bool {
        self.config.messenger.flow_events.iter().any(|k| k == kind)
    }
}

pub struct App {
    pub core: Arc<Core>,
    pub endpoints: HashMap<String, Arc<Endpoint>>,
    pub dispatcher: Arc<TurnDispatcher>,
    pub max_body_bytes: usize,
    pub admin_token: Option<Secret>,
}

impl App {
    pub fn new(config: Config) -> Arc<App> {
        let graph_http = http_client(Duration::from_millis(config.graph.timeout_ms));
        // Flow timeouts are enforced per call by `Flow::run`; the client itself only needs a ceiling.
        let flow_http = http_client(Duration::from_secs(3600));
        let core = Arc::new(Core {
            graph: GraphClient::new(graph_http, &config.graph.base_url, &config.graph.version),
            metrics: Arc::new(Metrics::new()),
            sessions: Sessions::new(),
        });
        let endpoints = config
            .endpoints
            .into_iter()
            .map(|c| {
                let ep = Endpoint::new(c, flow_http.clone());
                (ep.id.to_string(), Arc::new(ep))
            })
            .collect();
        let handler: fn(Job) -> BoxFuture<'static, ()> = |job| Box::pin(pipeline::run_turn(job));
        Arc::new(App {
            core,
            endpoints,
            dispatcher: Dispatcher::new(config.server.max_pending_events, handler),
            max_body_bytes: config.server.max_body_bytes,
            admin_token: config.server.admin_token,
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.core.metrics
    }
}
