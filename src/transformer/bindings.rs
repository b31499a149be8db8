//! Host bindings generated from `wit/transformer.wit`, and the conversions between them and the plain types
//! of [`super::types`]. Kept private to the module: the rest of Ferry never touches generated code.

use super::types as plain;

wasmtime::component::bindgen!({
    world: "transformer",
    path: "wit",
    exports: { default: async },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});

pub use exports::ferry::transformer::execution_finished::GuestIndices as FinishedIndices;
pub use exports::ferry::transformer::input::GuestIndices as InputIndices;
pub use exports::ferry::transformer::output::GuestIndices as OutputIndices;
use ferry::transformer::types as wit;

impl From<plain::EndpointInfo> for wit::EndpointInfo {
    fn from(e: plain::EndpointInfo) -> Self {
        wit::EndpointInfo {
            id: e.id,
            channel: e.channel,
            page_id: e.page_id,
            settings: e.settings,
        }
    }
}

impl From<plain::FlowInput> for wit::FlowInput {
    fn from(i: plain::FlowInput) -> Self {
        wit::FlowInput {
            user_id: i.user_id,
            session_id: i.session_id,
            text: i.text,
            data: i.data,
        }
    }
}

impl From<plain::InputEvent> for wit::InputEvent {
    fn from(e: plain::InputEvent) -> Self {
        wit::InputEvent {
            endpoint: e.endpoint.into(),
            input: e.input.into(),
            messenger_event: e.messenger_event,
            profile: e.profile,
        }
    }
}

impl From<wit::InputDecision> for plain::InputDecision {
    fn from(d: wit::InputDecision) -> Self {
        match d {
            wit::InputDecision::Forward(p) => plain::InputDecision::Forward(plain::InputPatch {
                user_id: p.user_id,
                session_id: p.session_id,
                text: p.text,
                data: p.data,
            }),
            wit::InputDecision::Drop => plain::InputDecision::Drop,
            wit::InputDecision::Reply(messages) => plain::InputDecision::Reply(messages),
        }
    }
}

impl From<plain::FlowOutput> for wit::FlowOutput {
    fn from(o: plain::FlowOutput) -> Self {
        wit::FlowOutput {
            text: o.text,
            data: o.data,
        }
    }
}

impl From<plain::OutputContext> for wit::OutputContext {
    fn from(c: plain::OutputContext) -> Self {
        wit::OutputContext {
            endpoint: c.endpoint.into(),
            user_id: c.user_id,
            session_id: c.session_id,
            profile: c.profile,
            output: c.output.into(),
            messages: c.messages,
        }
    }
}

impl From<wit::OutputDecision> for plain::OutputDecision {
    fn from(d: wit::OutputDecision) -> Self {
        match d {
            wit::OutputDecision::SendDefault => plain::OutputDecision::SendDefault,
            wit::OutputDecision::Send(messages) => plain::OutputDecision::Send(messages),
            wit::OutputDecision::Skip => plain::OutputDecision::Skip,
        }
    }
}

impl From<plain::TurnOutcome> for wit::TurnOutcome {
    fn from(o: plain::TurnOutcome) -> Self {
        match o {
            plain::TurnOutcome::Completed => wit::TurnOutcome::Completed,
            plain::TurnOutcome::Dropped => wit::TurnOutcome::Dropped,
            plain::TurnOutcome::Replied => wit::TurnOutcome::Replied,
            plain::TurnOutcome::FlowFailed => wit::TurnOutcome::FlowFailed,
        }
    }
}

impl From<plain::TurnSummary> for wit::TurnSummary {
    fn from(s: plain::TurnSummary) -> Self {
        wit::TurnSummary {
            endpoint: s.endpoint.into(),
            user_id: s.user_id,
            session_id: s.session_id,
            input: s.input.into(),
            outcome: s.outcome.into(),
            outputs: s.outputs.into_iter().map(Into::into).collect(),
            sent: s
                .sent
                .into_iter()
                .map(|m| wit::SentMessage {
                    message: m.message,
                    message_id: m.message_id,
                })
                .collect(),
        }
    }
}
