//! `ferry demo`: the host, the Graph API emulator and the echo flow on loopback, a short scripted
//! conversation posted as signed webhook events, and what the user would see.

use crate::config::Config;
use crate::sim::{self, events, RecordedCall, Sim, SimConfig, SimPage, SimUser};
use anyhow::{bail, Context};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

const PAGE: &str = "1234567890";
const TOKEN: &str = "demo-page-token";
const SECRET: &str = "demo-app-secret";
const VERIFY: &str = "demo-verify-token";
const PSID: &str = "4242";

pub async fn run() -> anyhow::Result<()> {
    let sim_cfg = SimConfig {
        pages: vec![SimPage::new(PAGE, TOKEN, Some(SECRET), "Ferry Demo Shop")],
        users: vec![SimUser::new(PSID, PAGE, "Ada", "Lovelace", "ada")],
        ..SimConfig::default()
    };
    let sim = Sim::start(sim_cfg, TcpListener::bind("127.0.0.1:0").await?).await?;
    // A throwaway database: the demo leaves nothing behind.
    let data_dir = std::env::temp_dir().join(format!("ferry-demo-{}", std::process::id()));
    let config = Config::parse(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = {data_dir:?}
[graph]
base_url = "{}"
[[endpoint]]
id = "demo"
page_id = "{PAGE}"
page_access_token = "{TOKEN}"
app_secret = "{SECRET}"
verify_token = "{VERIFY}"
[endpoint.messenger]
typing_indicators = true
message_delay_ms = 400
mark_seen = true
[endpoint.flow]
kind = "echo"
"#,
        sim.url(),
        data_dir = data_dir.display().to_string(),
    ))?;
    let host = crate::run::start(config, TcpListener::bind("127.0.0.1:0").await?).await?;
    println!(
        "Ferry demo: host {} · Graph API emulator {} · echo flow\n",
        host.url(),
        sim.url()
    );

    let http = reqwest::Client::new();
    let challenge = http
        .get(host.webhook_url("demo"))
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", VERIFY),
            ("hub.challenge", "1158201444"),
        ])
        .send()
        .await?
        .text()
        .await?;
    println!("Meta verifies the webhook: challenge 1158201444 answered with {challenge}\n");
    if challenge != "1158201444" {
        bail!("verification failed");
    }

    let sender = sim::WebhookSender::new(http);
    let now = now_ms();
    // Longer than Messenger's 2,000 characters: the answer goes out in two parts, with the delay between.
    let story = "Once upon a time a ferry carried messages across a wide river. ".repeat(34);
    let script = [
        (
            "Ada types \"Hello Ferry!\"",
            events::text(PAGE, PSID, "mid.1", "Hello Ferry!", now),
        ),
        (
            "Ada taps the quick reply \"Tell me more\"",
            events::quick_reply(PAGE, PSID, "mid.2", "Tell me more", "MORE", now + 1),
        ),
        (
            "Ada taps a button (postback GET_STARTED)",
            events::postback(PAGE, PSID, "Get Started", "GET_STARTED", now + 2),
        ),
        (
            "Ada sends a photo",
            events::image(PAGE, PSID, "mid.3", "https://example.com/cat.jpg", now + 3),
        ),
        (
            "Ada types \"buttons\"",
            events::text(PAGE, PSID, "mid.4", "buttons", now + 4),
        ),
        (
            "Ada pastes a long story (over 2,000 characters)",
            events::text(PAGE, PSID, "mid.5", story.trim(), now + 5),
        ),
    ];
    for (what, item) in script {
        sim.clear_calls();
        let body = events::to_meta_bytes(&events::wrap(PAGE, vec![item]));
        let status = sender
            .post(&host.webhook_url("demo"), SECRET, &body)
            .await?;
        println!("▶ {what}   (webhook answered {status})");
        if !host.wait_idle(Duration::from_secs(10)).await {
            bail!("the turn did not finish within 10 s");
        }
        let calls = sim.calls();
        let shown = show_turn(&calls);
        if shown == 0 {
            bail!("the bot did not answer");
        }
        println!();
    }
    let counters = sim.counters();
    println!(
        "Done: {} messages and {} sender actions delivered through the emulator; every call carried appsecret_proof.",
        counters.messages, counters.sender_actions
    );
    host.stop(Duration::from_secs(5))
        .await
        .context("stopping the host")?;
    sim.shutdown();
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

/// Prints what the user sees, with the time since the turn's first call; returns how many messages arrived.
fn show_turn(calls: &[RecordedCall]) -> usize {
    let start = calls.first().map(|c| c.at_ms).unwrap_or(0.0);
    let mut messages = 0;
    for c in calls {
        let t = c.at_ms - start;
        if let Some(action) = c.body.get("sender_action").and_then(Value::as_str) {
            let shown = match action {
                "mark_seen" => "✓ seen",
                "typing_on" => "… typing",
                other => other,
            };
            println!("  {t:>6.0} ms  {shown}");
        } else if let Some(m) = c.body.get("message") {
            messages += 1;
            println!("  {t:>6.0} ms  bot: {}", describe(m));
        }
    }
    messages
}

fn describe(message: &Value) -> String {
    let mut out = match (message.get("text"), message.pointer("/attachment/payload")) {
        (Some(Value::String(t)), _) if t.chars().count() > 70 => {
            let head: String = t.chars().take(60).collect();
            format!("{head}… ({} characters)", t.chars().count())
        }
        (Some(Value::String(t)), _) => t.clone(),
        (_, Some(p)) if p.get("template_type").is_some() => {
            let text = p.get("text").and_then(Value::as_str).unwrap_or_default();
            let titles = titles(p.get("buttons"), "title");
            let cards = titles_of_elements(p.get("elements"));
            format!("{text} {titles}{cards}")
        }
        (_, Some(p)) => format!(
            "[{} {}]",
            message
                .pointer("/attachment/type")
                .and_then(Value::as_str)
                .unwrap_or("attachment"),
            p.get("url").and_then(Value::as_str).unwrap_or_default()
        ),
        _ => message.to_string(),
    };
    if let Some(q) = message.get("quick_replies") {
        out.push_str(&format!("   quick replies: {}", titles(Some(q), "title")));
    }
    out
}

fn titles(list: Option<&Value>, key: &str) -> String {
    let Some(Value::Array(items)) = list else {
        return String::new();
    };
    let names: Vec<&str> = items
        .iter()
        .map(|i| i.get(key).and_then(Value::as_str).unwrap_or("?"))
        .collect();
    format!("[{}]", names.join(" | "))
}

fn titles_of_elements(list: Option<&Value>) -> String {
    match list {
        Some(Value::Array(items)) => format!("{} cards", items.len()),
        _ => String::new(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
