//! `ferry sim`: the emulator on its own, for developing a bot locally, and `ferry sim send` to play Meta
//! delivering one signed webhook event to a host.

use super::{events, Sim, SimConfig, SimPage, SimUser, WebhookSender};
use anyhow::Context;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(clap::Args, Debug)]
pub struct SimArgs {
    #[command(subcommand)]
    pub action: Option<SimAction>,
    /// Address to serve the Graph API on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// The emulated Page.
    #[arg(long, default_value = "1234567890")]
    pub page_id: String,
    /// The token the Page's Send API calls must carry.
    #[arg(long, env = "SIM_PAGE_TOKEN", default_value = "sim-page-token")]
    pub page_token: String,
    /// The app secret for `appsecret_proof` (optional).
    #[arg(long, env = "SIM_APP_SECRET")]
    pub app_secret: Option<String>,
    /// Profile permissions the app holds: locale, timezone, gender.
    #[arg(long, value_delimiter = ',')]
    pub granted_fields: Vec<String>,
    /// Users as PSID:FIRST:LAST (repeatable); unknown PSIDs are accepted with a made-up profile.
    #[arg(long = "user")]
    pub users: Vec<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum SimAction {
    /// Sign a text message event like Meta does and POST it to a webhook URL.
    Send {
        /// The host's webhook URL, e.g. http://127.0.0.1:8080/webhooks/messenger/shop
        #[arg(long)]
        webhook: String,
        #[arg(long, env = "SIM_APP_SECRET")]
        app_secret: String,
        #[arg(long, default_value = "1234567890")]
        page_id: String,
        #[arg(long, default_value = "4242")]
        psid: String,
        #[arg(long)]
        text: String,
    },
}

pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    if let Some(SimAction::Send {
        webhook,
        app_secret,
        page_id,
        psid,
        text,
    }) = args.action
    {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let item = events::text(&page_id, &psid, &format!("m.{ts}"), &text, ts);
        let body = events::to_meta_bytes(&events::wrap(&page_id, vec![item]));
        let status = WebhookSender::new(reqwest::Client::new())
            .post(&webhook, &app_secret, &body)
            .await?;
        println!("{webhook} answered {status}");
        return Ok(());
    }
    let mut cfg = SimConfig {
        pages: vec![SimPage::new(
            &args.page_id,
            &args.page_token,
            args.app_secret.as_deref(),
            "Emulated Page",
        )],
        granted_fields: args.granted_fields,
        ..SimConfig::default()
    };
    for spec in &args.users {
        let parts: Vec<&str> = spec.split(':').collect();
        let [psid, first, last] = parts[..] else {
            anyhow::bail!("--user must be PSID:FIRST:LAST, got `{spec}`");
        };
        cfg.users
            .push(SimUser::new(psid, &args.page_id, first, last, psid));
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let sim = Sim::start(cfg, listener).await?;
    println!(
        "Graph API emulator on {} (page {}); calls at {}/_sim/calls; Ctrl-C to stop",
        sim.url(),
        args.page_id,
        sim.url()
    );
    crate::run::shutdown_signal().await;
    sim.shutdown();
    Ok(())
}
