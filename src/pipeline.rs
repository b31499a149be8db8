//! One turn, from an accepted webhook event to the last delivered message.
//!
//! ```text
//!   event ─▶ mark_seen ─▶ profile ─▶ flow input ─▶ [INPUT HOOK] ─▶ flow ─▶ per output:
//!        convert ─▶ [OUTPUT HOOK] ─▶ deliver (typing, delay, Send API) ─▶ … ─▶ [EXECUTION FINISHED HOOK]
//! ```
//! Turns of one (endpoint, user) never overlap (see `dispatch`), so everything here may assume it is the
//! only work for that user.

use crate::app::{Core, Endpoint};
use crate::flow::{FlowError, FlowInput, FlowOutput};
use crate::messenger::convert::output_to_messages;
use crate::messenger::graph::{GraphError, SendResponse};
use crate::messenger::webhook::Event;
use crate::transformer::hooks::{InputStep, OutputStep, TurnHooks};
use crate::transformer::storage::SessionKey;
use crate::transformer::{self as tx, TurnOutcome};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Meta shows a typing indicator for about 20 s; re-send it before that runs out.
const TYPING_REFRESH: Duration = Duration::from_secs(15);

/// An accepted event waiting for its turn.
pub struct Job {
    pub core: Arc<Core>,
    pub endpoint: Arc<Endpoint>,
    pub event: Event,
    pub accepted_at: Instant,
}

/// How a turn ended, as counted in `ferry_turns_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The flow answered and its outputs were delivered (or it had none).
    Completed,
    /// The flow failed; the fallback text (if any) was sent.
    FlowFailed,
    /// A plugin's input hook dropped the event.
    Dropped,
    /// A plugin's input hook answered directly; the flow did not run.
    Replied,
    /// The event names no user to answer.
    NoUser,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::FlowFailed => "flow_failed",
            Outcome::Dropped => "dropped",
            Outcome::Replied => "replied",
            Outcome::NoUser => "no_user",
        }
    }
}

/// Runs one turn and records its outcome. Never panics on bad input: every failure is logged and counted.
pub async fn run_turn(job: Job) {
    let Job {
        core,
        endpoint,
        event,
        accepted_at,
    } = job;
    let outcome = turn(&core, &endpoint, &event).await;
    let labels = [("endpoint", &*endpoint.id)];
    core.metrics.observe(
        "ferry_turn_duration_seconds",
        &labels,
        accepted_at.elapsed().as_secs_f64(),
    );
    core.metrics.inc(
        "ferry_turns_total",
        &[("endpoint", &*endpoint.id), ("outcome", outcome.label())],
    );
}

async fn turn(core: &Core, ep: &Endpoint, event: &Event) -> Outcome {
    let Some(user) = User::of(event) else {
        tracing::warn!(endpoint = %ep.id, kind = event.kind_name(), "event names no user; ignored");
        return Outcome::NoUser;
    };
    let mut delivery = Delivery::new(core, ep, &user);
    if ep.config.messenger.mark_seen {
        delivery.sender_action("mark_seen").await;
    }
    let mut profile = fetch_profile(core, ep, &user).await;
    let contact_id = remember_contact(core, ep, &user, profile.as_ref());
    if let (Some(id), User::Psid(psid)) = (&contact_id, &user) {
        merge_contact(core, ep, id, psid).await;
    }
    if let (Some(Value::Object(p)), Some(id)) = (profile.as_mut(), &contact_id) {
        add_contact(core, p, id);
    }
    let session_id = match core.db.session_for(&ep.id, user.id(), ep.session_policy) {
        Ok(id) => id,
        Err(e) => {
            // The turn still runs; only continuity across turns is lost.
            tracing::error!(endpoint = %ep.id, error = %e, "session store unavailable; using a one-off session");
            crate::sessions::new_session_id()
        }
    };
    let mut input = flow_input(event, &user, session_id.clone(), profile.clone());
    // One plugin instance for the whole turn; session storage is keyed by the ids before any patch.
    let mut hooks = ep.plugin.begin(
        &core.metrics,
        Arc::clone(&core.session_storage),
        SessionKey {
            endpoint_id: ep.id.to_string(),
            user_id: user.id().to_string(),
            session_id,
        },
        sensitive_values(ep, &input),
    );
    let profile_json = profile.as_ref().map(Value::to_string);

    // ── INPUT HOOK: a plugin may patch `input`, drop the event, or answer directly. ──
    let answered_by_plugin =
        match input_hook(&mut hooks, ep, event, &mut input, &profile_json).await {
            InputStep::Forward => None,
            InputStep::Drop => Some(Outcome::Dropped),
            InputStep::Reply(messages) => {
                for message in messages {
                    delivery.message(message).await;
                }
                Some(Outcome::Replied)
            }
        };

    let (outputs, outcome) = match answered_by_plugin {
        Some(outcome) => (Vec::new(), outcome),
        None => {
            run_flow_and_deliver(
                core,
                ep,
                &mut delivery,
                &mut hooks,
                &input,
                &profile_json,
                &contact_id,
            )
            .await
        }
    };

    // ── EXECUTION FINISHED HOOK: the plugin sees every output and every message sent. ──
    let tx_outcome = match outcome {
        Outcome::FlowFailed => TurnOutcome::FlowFailed,
        Outcome::Dropped => TurnOutcome::Dropped,
        Outcome::Replied => TurnOutcome::Replied,
        Outcome::Completed | Outcome::NoUser => TurnOutcome::Completed,
    };
    finish(&mut hooks, ep, &input, tx_outcome, &outputs, &delivery).await;
    record_transcript(
        core,
        ep,
        &user,
        &contact_id,
        &input,
        &outputs,
        &delivery,
        outcome,
    );
    outcome
}

/// Calls the flow (its fallback text when it fails) and delivers every output through the output hook.
async fn run_flow_and_deliver(
    core: &Core,
    ep: &Endpoint,
    delivery: &mut Delivery<'_>,
    hooks: &mut TurnHooks,
    input: &FlowInput,
    profile_json: &Option<String>,
    contact_id: &Option<String>,
) -> (Vec<FlowOutput>, Outcome) {
    let (outputs, outcome) = match call_flow(core, ep, input).await {
        Ok(outputs) => (outputs, Outcome::Completed),
        Err(_) => {
            let fallback = ep.config.flow.fallback_text.iter().map(|text| FlowOutput {
                text: Some(text.clone()),
                data: None,
            });
            (fallback.collect(), Outcome::FlowFailed)
        }
    };
    if let Some(id) = contact_id {
        save_contact_data(core, ep, id, &outputs);
    }
    for output in &outputs {
        // ── OUTPUT HOOK (inside): a plugin sees the raw output and its Send API messages. ──
        deliver_output(delivery, hooks, ep, input, profile_json, output).await;
    }
    (outputs, outcome)
}

/// "Update Contact Profiles": the fetched profile goes into the user's contact; returns the contact id.
fn remember_contact(
    core: &Core,
    ep: &Endpoint,
    user: &User,
    profile: Option<&Value>,
) -> Option<String> {
    let (User::Psid(psid), Some(profile)) = (user, profile) else {
        return None;
    };
    if !ep.config.profiles.update_contacts || !ep.config.data_protection.contact_profiles {
        return None;
    }
    let business = match ep.config.profiles.business.as_str() {
        "" => &*ep.id,
        key => key,
    };
    match core
        .db
        .update_contact(business, &ep.id, &ep.config.page_id, psid, profile)
    {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(endpoint = %ep.id, error = %e, "contact not updated");
            None
        }
    }
}

/// The flow and the plugins see the merged contact in `data.profile`: its id, the person's PSIDs on the
/// business's Pages, the free `data` the flow keeps there, and profile fields other Pages filled in.
fn add_contact(core: &Core, profile: &mut Map<String, Value>, contact_id: &str) {
    profile.insert("contact_id".into(), json!(contact_id));
    let Ok(Some(Value::Object(contact))) = core.db.contact(contact_id) else {
        return;
    };
    for key in [
        "first_name",
        "last_name",
        "profile_pic",
        "locale",
        "timezone",
        "gender",
    ] {
        if let Some(value) = contact.get(key).filter(|v| !v.is_null()) {
            profile.entry(key).or_insert_with(|| value.clone());
        }
    }
    for key in ["data", "psids"] {
        if let Some(value) = contact.get(key) {
            profile.insert(format!("contact_{key}"), value.clone());
        }
    }
}

/// "Merge Contact Profiles": asks Meta for the person's PSIDs on the business's other Pages and folds
/// their contacts into this one. Once per contact and Page: a mapped PSID is not asked again. A failure
/// leaves the contacts separate, with a warning.
async fn merge_contact(core: &Core, ep: &Endpoint, contact_id: &str, psid: &str) {
    let business = ep.config.profiles.business.as_str();
    if !ep.config.profiles.merge_contacts || business.is_empty() {
        return;
    }
    let siblings: Vec<&(String, String, String)> = core
        .business_pages
        .iter()
        .filter(|(page, _, b)| b == business && *page != *ep.config.page_id)
        .collect();
    if siblings.is_empty() || !ep.profiles.mark_merge_checked(psid) {
        return;
    }
    match core.graph.ids_for_pages(&ep.page, psid).await {
        Ok(ids) => {
            let others: Vec<(String, String, String)> = ids
                .into_iter()
                .filter_map(|(page, other)| {
                    siblings
                        .iter()
                        .find(|(p, _, _)| *p == page)
                        .map(|(p, endpoint, _)| (p.clone(), other, endpoint.clone()))
                })
                .collect();
            if let Err(e) = core.db.merge_contacts(contact_id, &others) {
                tracing::warn!(endpoint = %ep.id, error = %e, "contacts not merged");
            }
        }
        Err(e) => {
            ep.profiles.unmark_merge_checked(psid);
            tracing::warn!(endpoint = %ep.id, error = %e, "ids_for_pages failed; contacts stay separate");
        }
    }
}

/// `data.contact` (an object) in a flow output is merged into the contact's free `data`.
fn save_contact_data(core: &Core, ep: &Endpoint, contact_id: &str, outputs: &[FlowOutput]) {
    for output in outputs {
        if let Some(Value::Object(patch)) = output.data.as_ref().and_then(|d| d.get("contact")) {
            if let Err(e) = core.db.merge_contact_data(contact_id, patch) {
                tracing::warn!(endpoint = %ep.id, error = %e, "contact data not saved");
            }
        }
    }
}

/// "Collect conversations": the turn as it happened, after the input hook, with the message ids.
#[allow(clippy::too_many_arguments)]
fn record_transcript(
    core: &Core,
    ep: &Endpoint,
    user: &User,
    contact_id: &Option<String>,
    input: &FlowInput,
    outputs: &[FlowOutput],
    delivery: &Delivery<'_>,
    outcome: Outcome,
) {
    if !ep.config.data_protection.collect_conversations {
        return;
    }
    let turn = crate::store::TranscriptTurn {
        endpoint_id: ep.id.to_string(),
        user_id: user.id().to_string(),
        contact_id: contact_id.clone(),
        session_id: input.session_id.clone(),
        at_ms: core.db.now_ms(),
        input: json!({"userId": input.user_id, "text": input.text, "data": input.data}),
        outputs: Value::Array(
            outputs
                .iter()
                .map(|o| json!({"text": o.text, "data": o.data}))
                .collect(),
        ),
        sent: Value::Array(
            delivery
                .log
                .iter()
                .map(|(message, id)| json!({"message": message, "message_id": id}))
                .collect(),
        ),
        outcome: outcome.label().to_string(),
    };
    if let Err(e) = core.db.record_turn(&turn) {
        tracing::warn!(endpoint = %ep.id, error = %e, "transcript not stored");
    }
}

/// What `mask_sensitive_logging` hides from plugin log lines: the user's ids, text and names.
fn sensitive_values(ep: &Endpoint, input: &FlowInput) -> Vec<String> {
    if !ep.config.data_protection.mask_sensitive_logging {
        return Vec::new();
    }
    let mut values = vec![input.user_id.clone()];
    values.extend(input.text.iter().cloned());
    for key in ["first_name", "last_name", "contact_id"] {
        if let Some(v) = input
            .data
            .get("profile")
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
        {
            values.push(v.to_string());
        }
    }
    // Longest first, so that a value containing another is masked whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values
}

/// Runs the input hook (when the plugin has one): the patch lands in `input`.
async fn input_hook(
    hooks: &mut TurnHooks,
    ep: &Endpoint,
    event: &Event,
    input: &mut FlowInput,
    profile: &Option<String>,
) -> InputStep {
    if !hooks.has_input() {
        return InputStep::Forward;
    }
    let mut plugin_input = to_plugin_input(input);
    let hook_event = tx::InputEvent {
        endpoint: ep.plugin.endpoint_info().clone(),
        input: plugin_input.clone(),
        messenger_event: event.raw.get().to_string(),
        profile: profile.clone(),
    };
    let step = hooks.input(hook_event, &mut plugin_input).await;
    input.user_id = plugin_input.user_id;
    input.session_id = plugin_input.session_id;
    input.text = plugin_input.text;
    // The runtime validated that a patched `data` is a JSON object.
    if let Ok(Value::Object(data)) = serde_json::from_str(&plugin_input.data) {
        input.data = data;
    }
    step
}

/// Runs the execution-finished hook with the turn's outputs and the messages actually sent.
async fn finish(
    hooks: &mut TurnHooks,
    ep: &Endpoint,
    input: &FlowInput,
    outcome: TurnOutcome,
    outputs: &[FlowOutput],
    delivery: &Delivery<'_>,
) {
    if !hooks.has_finished() {
        hooks.finished_without_call();
        return;
    }
    let summary = tx::TurnSummary {
        endpoint: ep.plugin.endpoint_info().clone(),
        user_id: input.user_id.clone(),
        session_id: input.session_id.clone(),
        input: to_plugin_input(input),
        outcome,
        outputs: outputs.iter().map(to_plugin_output).collect(),
        sent: delivery
            .log
            .iter()
            .map(|(message, id)| tx::SentMessage {
                message: message.to_string(),
                message_id: id.clone(),
            })
            .collect(),
    };
    hooks.finished(summary).await;
}

fn to_plugin_input(input: &FlowInput) -> tx::FlowInput {
    tx::FlowInput {
        user_id: input.user_id.clone(),
        session_id: input.session_id.clone(),
        text: input.text.clone(),
        data: Value::Object(input.data.clone()).to_string(),
    }
}

fn to_plugin_output(output: &FlowOutput) -> tx::FlowOutput {
    tx::FlowOutput {
        text: output.text.clone(),
        data: output.data.as_ref().map(Value::to_string),
    }
}

/// Converts one output, lets the output hook decide, and delivers the messages in order.
async fn deliver_output(
    delivery: &mut Delivery<'_>,
    hooks: &mut TurnHooks,
    ep: &Endpoint,
    input: &FlowInput,
    profile: &Option<String>,
    output: &FlowOutput,
) {
    let messages = match output_to_messages(output.text.as_deref(), output.data.as_ref()) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(endpoint = %ep.id, error = %e, "flow output not sent: cannot convert it");
            delivery
                .core
                .metrics
                .inc("ferry_output_errors_total", &[("endpoint", &*ep.id)]);
            return;
        }
    };
    let messages = if hooks.has_output() {
        let context = tx::OutputContext {
            endpoint: ep.plugin.endpoint_info().clone(),
            user_id: input.user_id.clone(),
            session_id: input.session_id.clone(),
            profile: profile.clone(),
            output: to_plugin_output(output),
            messages: messages.iter().map(Value::to_string).collect(),
        };
        match hooks.output(context, messages).await {
            OutputStep::Send(messages) => messages,
            OutputStep::Skip => return,
        }
    } else {
        messages
    };
    for message in messages {
        delivery.message(message).await;
    }
}

/// Who a turn answers: a PSID, or the `user_ref` of a checkbox opt-in (which has no PSID yet).
pub enum User {
    Psid(String),
    UserRef(String),
}

impl User {
    fn of(event: &Event) -> Option<User> {
        let id = event.user_id()?.to_string();
        if event.sender.is_none() {
            Some(User::UserRef(id))
        } else {
            Some(User::Psid(id))
        }
    }

    pub fn id(&self) -> &str {
        match self {
            User::Psid(id) | User::UserRef(id) => id,
        }
    }

    fn recipient(&self) -> Value {
        match self {
            User::Psid(id) => json!({ "id": id }),
            User::UserRef(r) => json!({ "user_ref": r }),
        }
    }
}

async fn fetch_profile(core: &Core, ep: &Endpoint, user: &User) -> Option<Value> {
    let User::Psid(psid) = user else { return None };
    if !ep.config.profiles.request {
        return None;
    }
    match ep
        .profiles
        .get(&core.graph, &ep.page, psid, &ep.extra_profile_fields)
        .await
    {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(endpoint = %ep.id, error = %e, "profile unavailable; the turn goes on without it");
            core.metrics
                .inc("ferry_profile_errors_total", &[("endpoint", &*ep.id)]);
            None
        }
    }
}

/// Builds the flow input: the text the user meant, and `data` with the request, profile and attachments.
pub fn flow_input(
    event: &Event,
    user: &User,
    session_id: String,
    profile: Option<Value>,
) -> FlowInput {
    let request: Value = serde_json::from_str(event.raw.get()).unwrap_or(Value::Null);
    let text = input_text(&request);
    let attachments = request
        .pointer("/message/attachments")
        .filter(|a| a.is_array())
        .cloned()
        .unwrap_or_else(|| Value::Array(Vec::new()));
    let mut data = Map::new();
    data.insert("request".into(), request);
    if let Some(p) = profile {
        data.insert("profile".into(), p);
    }
    data.insert("attachments".into(), attachments);
    FlowInput {
        user_id: user.id().to_string(),
        session_id,
        text,
        data,
    }
}

/// The quick reply payload, else the message text, else the postback payload.
fn input_text(request: &Value) -> Option<String> {
    [
        "/message/quick_reply/payload",
        "/message/text",
        "/postback/payload",
    ]
    .iter()
    .find_map(|p| request.pointer(p).and_then(Value::as_str))
    .map(str::to_string)
}

async fn call_flow(
    core: &Core,
    ep: &Endpoint,
    input: &FlowInput,
) -> Result<Vec<FlowOutput>, FlowError> {
    let started = Instant::now();
    let timeout = Duration::from_millis(ep.config.flow.timeout_ms);
    let result = ep.flow.run(&ep.flow_endpoint, input, timeout).await;
    core.metrics.observe(
        "ferry_flow_duration_seconds",
        &[("endpoint", &*ep.id)],
        started.elapsed().as_secs_f64(),
    );
    if let Err(e) = &result {
        tracing::warn!(endpoint = %ep.id, error = %e, "flow failed");
        core.metrics.inc(
            "ferry_flow_errors_total",
            &[("endpoint", &*ep.id), ("kind", e.kind())],
        );
    }
    result
}

/// Delivers one turn's messages to one user, in order, with typing indicators and delays.
pub struct Delivery<'a> {
    core: &'a Core,
    ep: &'a Endpoint,
    recipient: Value,
    /// Sender actions are not allowed for `user_ref` recipients.
    can_act: bool,
    sent: usize,
    /// Every message of the turn with its Graph message id (`None` when the send failed).
    pub log: Vec<(Value, Option<String>)>,
}

impl<'a> Delivery<'a> {
    fn new(core: &'a Core, ep: &'a Endpoint, user: &User) -> Delivery<'a> {
        Delivery {
            core,
            ep,
            recipient: user.recipient(),
            can_act: matches!(user, User::Psid(_)),
            sent: 0,
            log: Vec::new(),
        }
    }

    /// Sends one message: typing indicator first, and the configured pause after the previous message.
    pub async fn message(&mut self, message: Value) -> Option<SendResponse> {
        let typing = self.can_act && self.ep.config.messenger.typing_indicators;
        if typing {
            self.sender_action("typing_on").await;
        }
        if self.sent > 0 {
            self.pause(typing).await;
        }
        let body = json!({
            "recipient": self.recipient,
            "messaging_type": "RESPONSE",
            "message": message,
        });
        let result = self.call(&body).await.ok();
        self.sent += 1;
        if let Value::Object(mut body) = body {
            if let Some(message) = body.remove("message") {
                self.log
                    .push((message, result.as_ref().and_then(|r| r.message_id.clone())));
            }
        }
        result
    }

    /// Waits `message_delay_ms`, re-sending the typing indicator before Meta hides it.
    async fn pause(&self, typing: bool) {
        let mut left = Duration::from_millis(self.ep.config.messenger.message_delay_ms);
        while left > Duration::ZERO {
            let step = left.min(TYPING_REFRESH);
            tokio::time::sleep(step).await;
            left -= step;
            if typing && left > Duration::ZERO {
                self.sender_action("typing_on").await;
            }
        }
    }

    async fn sender_action(&self, action: &str) {
        if !self.can_act {
            return;
        }
        let body = json!({ "recipient": self.recipient, "sender_action": action });
        let _ = self.call(&body).await;
    }

    async fn call(&self, body: &Value) -> Result<SendResponse, GraphError> {
        let started = Instant::now();
        let result = self.core.graph.send(&self.ep.page, body).await;
        let labels = [("endpoint", &*self.ep.id)];
        self.core.metrics.observe(
            "ferry_send_duration_seconds",
            &labels,
            started.elapsed().as_secs_f64(),
        );
        match &result {
            Ok(_) => {
                if body.get("message").is_some() {
                    self.core.metrics.inc("ferry_messages_sent_total", &labels);
                }
            }
            Err(e) => {
                let code = e.code_label();
                tracing::warn!(endpoint = %self.ep.id, error = %e, retry = ?e.retry(), "Send API call failed");
                self.core.metrics.inc(
                    "ferry_send_errors_total",
                    &[("endpoint", &*self.ep.id), ("code", &code)],
                );
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_text_prefers_quick_reply_then_text_then_postback() {
        let qr = json!({"message":{"text":"Red","quick_reply":{"payload":"COLOR_RED"}}});
        assert_eq!(input_text(&qr).as_deref(), Some("COLOR_RED"));
        let text = json!({"message":{"text":"hi"}});
        assert_eq!(input_text(&text).as_deref(), Some("hi"));
        let pb = json!({"postback":{"title":"Start","payload":"GET_STARTED"}});
        assert_eq!(input_text(&pb).as_deref(), Some("GET_STARTED"));
        let att = json!({"message":{"attachments":[{"type":"image","payload":{"url":"u"}}]}});
        assert_eq!(input_text(&att), None);
        assert_eq!(input_text(&json!({"referral":{"ref":"x"}})), None);
    }
}
