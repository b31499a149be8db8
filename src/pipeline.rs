//! One turn, from an accepted webhook event to the last delivered message.
//!
//! ```text
//!   inbox ─▶ mark_seen ─▶ profile ─▶ flow input ─▶ [INPUT HOOK] ─▶ flow ─▶ ⟪outputs recorded⟫ ─▶ per output:
//!        convert ─▶ [OUTPUT HOOK] ─▶ per message: deliver (typing, delay, retries) ─▶ ⟪recorded⟫ ─▶ …
//!        ─▶ [EXECUTION FINISHED HOOK] ─▶ transcript ─▶ removed from the inbox
//! ```
//! Every ⟪recorded⟫ step is on disk (the journal) before the next step starts, so a turn interrupted by a
//! crash resumes where it was: the flow is never called again once its outputs are recorded, and only the
//! one Send API call in flight at the crash can be repeated.
//!
//! Turns of one (endpoint, user) never overlap (see `dispatch`), so everything here may assume it is the
//! only work for that user.

use crate::app::{Core, Endpoint};
use crate::delivery::{Delivery, User};
use crate::flow::{FlowError, FlowInput, FlowOutput};
use crate::messenger::convert::output_to_messages;
use crate::messenger::webhook::Event;
use crate::transformer::hooks::{InputStep, OutputStep, TurnHooks};
use crate::transformer::storage::SessionKey;
use crate::transformer::{self as tx, TurnOutcome};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An accepted event waiting for its turn: an inbox entry, with the progress recorded before a restart.
pub struct Job {
    pub core: Arc<Core>,
    pub endpoint: Arc<Endpoint>,
    /// The inbox entry's sequence number.
    pub seq: i64,
    /// When the inbox accepted the event (makes the transcript's turn id unique across journals).
    pub received_ms: i64,
    pub event: Event,
    pub progress: Option<Progress>,
    pub accepted_at: Instant,
}

/// How a turn ended, as counted in `ferry_turns_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// What a turn has done, as recorded in its inbox entry: enough to finish it after a crash without calling
/// the flow again or repeating a delivered message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Progress {
    /// The flow input after the input hook.
    pub input: FlowInput,
    /// The session id before the input hook (plugin session storage is keyed by it).
    pub session_id: String,
    pub profile: Option<String>,
    pub contact_id: Option<String>,
    pub outcome: Outcome,
    pub outputs: Vec<FlowOutput>,
    /// Outputs whose messages are all delivered (or dead-lettered).
    pub delivered: usize,
    /// The Send API messages being delivered (of output `delivered`, or a plugin's direct reply), and how
    /// many of them are done.
    pub batch: Option<Vec<Value>>,
    pub batch_done: usize,
    /// Messages delivered so far, with their message ids.
    pub log: Vec<(Value, Option<String>)>,
}

/// Runs one turn, or the rest of one, and records its outcome. Never panics on bad input: every failure is
/// logged and counted.
pub async fn run_turn(job: Job) {
    if job.core.is_stopping() {
        // Shutting down: the event stays in the inbox and runs at the next start.
        return;
    }
    let Job {
        core,
        endpoint,
        seq,
        received_ms,
        event,
        progress,
        accepted_at,
    } = job;
    let turn_id = format!("{received_ms}-{seq}");
    let outcome = turn(&core, &endpoint, seq, &turn_id, &event, progress).await;
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

async fn turn(
    core: &Core,
    ep: &Endpoint,
    seq: i64,
    turn_id: &str,
    event: &Event,
    resumed: Option<Progress>,
) -> Outcome {
    let Some(user) = user_of(event) else {
        tracing::warn!(endpoint = %ep.id, kind = event.kind_name(), "event names no user; ignored");
        core.db.finish_turn(None, Some(seq));
        return Outcome::NoUser;
    };
    let mut delivery = Delivery::new(core, ep, &user);
    let (mut hooks, mut progress) = match resumed {
        Some(progress) => {
            tracing::info!(endpoint = %ep.id, seq, delivered = progress.delivered, "resuming a turn interrupted by a restart");
            delivery.log = progress.log.clone();
            (begin_hooks(core, ep, &user, &progress), progress)
        }
        None => start_turn(core, ep, seq, event, &user, &mut delivery).await,
    };

    // ── OUTPUT HOOK (inside): every output is converted, shown to the plugin and delivered. ──
    deliver_outputs(core, ep, seq, &mut delivery, &mut hooks, &mut progress).await;

    // ── EXECUTION FINISHED HOOK: the plugin sees every output and every message sent. ──
    let tx_outcome = match progress.outcome {
        Outcome::FlowFailed => TurnOutcome::FlowFailed,
        Outcome::Dropped => TurnOutcome::Dropped,
        Outcome::Replied => TurnOutcome::Replied,
        Outcome::Completed | Outcome::NoUser => TurnOutcome::Completed,
    };
    finish(&mut hooks, ep, &progress, tx_outcome, &delivery).await;
    let transcript = transcript(core, ep, &user, turn_id, &progress, &delivery);
    // The inbox entry goes once the transcript is stored (see `Db::finish_turn`).
    core.db.finish_turn(transcript, Some(seq));
    progress.outcome
}

/// The first part of a turn: the user's profile and contact, the session, the input hook and the flow. Ends
/// with the flow's outputs recorded.
async fn start_turn(
    core: &Core,
    ep: &Endpoint,
    seq: i64,
    event: &Event,
    user: &User,
    delivery: &mut Delivery<'_>,
) -> (TurnHooks, Progress) {
    if ep.config.messenger.mark_seen {
        delivery.sender_action("mark_seen").await;
    }
    let mut profile = fetch_profile(core, ep, user).await;
    let contact_id = remember_contact(core, ep, user, profile.as_ref());
    if let (Some(id), User::Psid(psid)) = (&contact_id, user) {
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
    let input = flow_input(event, user, session_id.clone(), profile.clone());
    let mut progress = Progress {
        input,
        session_id,
        profile: profile.as_ref().map(Value::to_string),
        contact_id,
        outcome: Outcome::Completed,
        outputs: Vec::new(),
        delivered: 0,
        batch: None,
        batch_done: 0,
        log: Vec::new(),
    };
    // One plugin instance for the whole turn; session storage is keyed by the ids before any patch.
    let mut hooks = begin_hooks(core, ep, user, &progress);

    // ── INPUT HOOK: a plugin may patch the input, drop the event, or answer directly. ──
    match input_hook(&mut hooks, ep, event, &mut progress).await {
        InputStep::Forward => {
            // ── FLOW ──
            let (outputs, outcome) = hooks.waiting(run_flow(core, ep, &progress.input)).await;
            if let Some(id) = &progress.contact_id {
                save_contact_data(core, ep, id, &outputs);
            }
            progress.outputs = outputs;
            progress.outcome = outcome;
            record(core, ep, seq, &progress).await;
        }
        InputStep::Drop => progress.outcome = Outcome::Dropped,
        InputStep::Reply(messages) => {
            progress.outcome = Outcome::Replied;
            progress.batch = Some(messages);
            record(core, ep, seq, &progress).await;
        }
    }
    (hooks, progress)
}

/// Writes the turn's progress to the journal and waits until it is on disk.
async fn record(core: &Core, ep: &Endpoint, seq: i64, progress: &Progress) {
    let text = match serde_json::to_string(progress) {
        Ok(text) => text,
        Err(e) => {
            tracing::error!(endpoint = %ep.id, error = %e, "turn progress not serialisable");
            return;
        }
    };
    if let Err(e) = core.journal.save_progress(seq, text).await {
        // The turn goes on; a crash before its end would repeat more than the step in flight.
        tracing::error!(endpoint = %ep.id, error = %e, "turn progress not recorded");
    }
}

/// One plugin instance for the turn (or for what is left of it after a restart).
fn begin_hooks(core: &Core, ep: &Endpoint, user: &User, progress: &Progress) -> TurnHooks {
    ep.plugin.begin(
        &core.metrics,
        Arc::clone(&core.session_storage),
        SessionKey {
            endpoint_id: ep.id.to_string(),
            user_id: user.id().to_string(),
            session_id: progress.session_id.clone(),
        },
        sensitive_values(ep, &progress.input),
    )
}

/// Calls the flow; when it fails, its outputs are the fallback text (if any).
async fn run_flow(core: &Core, ep: &Endpoint, input: &FlowInput) -> (Vec<FlowOutput>, Outcome) {
    match call_flow(core, ep, input).await {
        Ok(outputs) => (outputs, Outcome::Completed),
        Err(_) => {
            let fallback = ep.config.flow.fallback_text.iter().map(|text| FlowOutput {
                text: Some(text.clone()),
                data: None,
            });
            (fallback.collect(), Outcome::FlowFailed)
        }
    }
}

/// Delivers what is left of the turn: the batch in progress, then each remaining output through the output
/// hook. Progress is recorded after every message, so a restart repeats at most the message in flight.
async fn deliver_outputs(
    core: &Core,
    ep: &Endpoint,
    seq: i64,
    delivery: &mut Delivery<'_>,
    hooks: &mut TurnHooks,
    progress: &mut Progress,
) {
    loop {
        if let Some(batch) = progress.batch.clone() {
            for (i, message) in batch.into_iter().enumerate().skip(progress.batch_done) {
                hooks.waiting(delivery.message(message)).await;
                progress.batch_done = i + 1;
                progress.log = delivery.log.clone();
                record(core, ep, seq, progress).await;
            }
            progress.batch = None;
            progress.batch_done = 0;
            progress.delivered += 1;
        }
        let Some(output) = progress.outputs.get(progress.delivered).cloned() else {
            return;
        };
        // ── OUTPUT HOOK: a plugin sees the raw output and its Send API messages. ──
        match output_messages(delivery, hooks, ep, progress, &output).await {
            Some((messages, changed)) if !messages.is_empty() => {
                progress.batch = Some(messages);
                progress.batch_done = 0;
                if changed {
                    // A plugin's answer may differ if asked again: keep the one that is being delivered.
                    // (The default conversion is the same every time: nothing to keep.)
                    record(core, ep, seq, progress).await;
                }
            }
            _ => progress.delivered += 1,
        }
    }
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
fn transcript(
    core: &Core,
    ep: &Endpoint,
    user: &User,
    turn_id: &str,
    progress: &Progress,
    delivery: &Delivery<'_>,
) -> Option<crate::store::TranscriptTurn> {
    if !ep.config.data_protection.collect_conversations {
        return None;
    }
    let input = &progress.input;
    Some(crate::store::TranscriptTurn {
        turn_id: turn_id.to_string(),
        endpoint_id: ep.id.to_string(),
        user_id: user.id().to_string(),
        contact_id: progress.contact_id.clone(),
        session_id: input.session_id.clone(),
        at_ms: core.db.now_ms(),
        input: json!({"userId": input.user_id, "text": input.text, "data": input.data}),
        outputs: Value::Array(
            progress
                .outputs
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
        outcome: progress.outcome.label().to_string(),
    })
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

/// Runs the input hook (when the plugin has one): the patch lands in `progress.input`.
async fn input_hook(
    hooks: &mut TurnHooks,
    ep: &Endpoint,
    event: &Event,
    progress: &mut Progress,
) -> InputStep {
    if !hooks.has_input() {
        return InputStep::Forward;
    }
    let input = &mut progress.input;
    let event_input = to_plugin_input(input);
    // What the patch lands on. `data` starts empty, which no patch can leave (a patched `data` is a JSON
    // object, validated by the runtime): only a patched `data` is parsed back.
    let mut patched = tx::FlowInput {
        user_id: event_input.user_id.clone(),
        session_id: event_input.session_id.clone(),
        text: event_input.text.clone(),
        data: String::new(),
    };
    let hook_event = tx::InputEvent {
        endpoint: ep.plugin.endpoint_info().clone(),
        input: event_input,
        messenger_event: event.raw.get().to_string(),
        profile: progress.profile.clone(),
    };
    let step = hooks.input(hook_event, &mut patched).await;
    input.user_id = patched.user_id;
    input.session_id = patched.session_id;
    input.text = patched.text;
    if !patched.data.is_empty() {
        if let Ok(Value::Object(data)) = serde_json::from_str(&patched.data) {
            input.data = data;
        }
    }
    step
}

/// Runs the execution-finished hook with the turn's outputs and the messages actually sent.
async fn finish(
    hooks: &mut TurnHooks,
    ep: &Endpoint,
    progress: &Progress,
    outcome: TurnOutcome,
    delivery: &Delivery<'_>,
) {
    if !hooks.has_finished() {
        hooks.finished_without_call();
        return;
    }
    let input = &progress.input;
    let summary = tx::TurnSummary {
        endpoint: ep.plugin.endpoint_info().clone(),
        user_id: input.user_id.clone(),
        session_id: input.session_id.clone(),
        input: to_plugin_input(input),
        outcome,
        outputs: progress.outputs.iter().map(to_plugin_output).collect(),
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
        // Serialised in place: cloning the map first doubled the cost.
        data: serde_json::to_string(&input.data).unwrap_or_else(|_| "{}".to_string()),
    }
}

fn to_plugin_output(output: &FlowOutput) -> tx::FlowOutput {
    tx::FlowOutput {
        text: output.text.clone(),
        data: output.data.as_ref().map(Value::to_string),
    }
}

/// Converts one output and lets the output hook decide: the messages to send (and whether a plugin changed
/// them from the default conversion), `None` for none.
async fn output_messages(
    delivery: &Delivery<'_>,
    hooks: &mut TurnHooks,
    ep: &Endpoint,
    progress: &Progress,
    output: &FlowOutput,
) -> Option<(Vec<Value>, bool)> {
    let messages = match output_to_messages(output.text.as_deref(), output.data.as_ref()) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(endpoint = %ep.id, error = %e, "flow output not sent: cannot convert it");
            delivery.count_output_error();
            return None;
        }
    };
    if !hooks.has_output() {
        return Some((messages, false));
    }
    let context = tx::OutputContext {
        endpoint: ep.plugin.endpoint_info().clone(),
        user_id: progress.input.user_id.clone(),
        session_id: progress.input.session_id.clone(),
        profile: progress.profile.clone(),
        output: to_plugin_output(output),
        messages: messages.iter().map(Value::to_string).collect(),
    };
    match hooks.output(context, messages.clone()).await {
        OutputStep::Send(sent) => {
            let changed = sent != messages;
            Some((sent, changed))
        }
        OutputStep::Skip => None,
    }
}

/// Who an event's turn answers: its PSID, or the `user_ref` of a checkbox opt-in.
fn user_of(event: &Event) -> Option<User> {
    let id = event.user_id()?.to_string();
    if event.sender.is_none() {
        Some(User::UserRef(id))
    } else {
        Some(User::Psid(id))
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
