//! `mask_sensitive_logging`: plugin log lines never show the user's id or text when the endpoint masks them
//! (verified on the captured log output), and do when it does not.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

async fn run(mask: bool, psid: &str, text: &str) {
    let flow =
        TestFlow::start(|_| (200, json!({"outputs": [{"text": "ok"}]}).to_string(), 0)).await;
    let plugin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/plugins/test_guest.wasm");
    let extra = format!(
        "{}\n[endpoint.data_protection]\nmask_sensitive_logging = {mask}\n[endpoint.transformer]\nplugin = \"{}\"\n",
        quiet_messenger(),
        plugin.display()
    );
    let h = Harness::start(
        sim_config(vec![sim_user(psid, "Ada")]),
        &endpoint_toml(&flow.toml(), &extra),
    )
    .await;
    let item = text_event(psid, "m1", &format!("log-user {text}"), 1);
    assert_eq!(h.post_json(&body(vec![item])).await.0, 200);
    h.idle().await;
    let sent: Vec<Value> = h.messages().iter().map(|c| c.body.clone()).collect();
    assert_eq!(sent.len(), 1);
}

#[tokio::test]
async fn plugin_log_lines_are_masked_only_when_asked() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // Global: turns run on the host's own threads. This file holds this one test, so nothing else logs here.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    run(true, "9876543210", "my secret plan").await;
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("user *** wrote"),
        "the plugin's line is there, masked:\n{log}"
    );
    assert!(!log.contains("9876543210"), "{log}");
    assert!(!log.contains("my secret plan"), "{log}");
    captured.0.lock().unwrap().clear();

    run(false, "1234509876", "an open plan").await;
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("user 1234509876 wrote"), "{log}");
}
