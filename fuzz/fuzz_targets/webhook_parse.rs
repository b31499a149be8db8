//! Fuzzes the webhook body parser with raw bytes, as the HTTP handler would receive them, and walks every
//! parsed event through its cheap accessors so that they are fuzzed too.
#![no_main]

use ferry::messenger::webhook::{
    is_page_object, parse, AttachmentView, EventKind, ParseError, UserKey,
};
use libfuzzer_sys::fuzz_target;

/// `MAX_WARNINGS` in webhook.rs, plus the "N more warnings not shown" line.
const WARNING_CAP: usize = 64 + 1;

fuzz_target!(|body: &[u8]| {
    let notification = match parse(body) {
        Ok(notification) => notification,
        Err(ParseError::NotJson { .. } | ParseError::NotObject) => return,
    };
    assert!(
        notification.warnings.len() <= WARNING_CAP,
        "{} warnings",
        notification.warnings.len()
    );
    let _ = is_page_object(&notification);
    let count = notification.event_count();
    let mut walked = 0;
    for (entry, event) in notification.events() {
        walked += 1;
        let _ = (entry.id.len(), entry.time_ms, event.source.as_str());

        // The raw item is kept byte for byte: it must be a JSON object and a slice of the body.
        let raw = event.raw.get();
        assert!(
            raw.starts_with('{') && raw.ends_with('}'),
            "raw item {raw:?}"
        );
        assert!(raw.len() <= body.len());

        let name = event.kind_name();
        assert_eq!(name, event.kind.name());
        assert_eq!(event.is_echo(), name == "echo");
        assert_eq!(event.is_echo(), matches!(event.kind, EventKind::Echo(_)));

        let user = event.user();
        assert_eq!(event.user_id(), user.map(UserKey::as_str));
        match user {
            Some(UserKey::Psid(id)) => {
                let expected = if event.is_echo() {
                    &event.recipient
                } else {
                    &event.sender
                };
                assert_eq!(expected.as_deref(), Some(id));
            }
            Some(UserKey::UserRef(user_ref)) => {
                let optin_ref = match &event.kind {
                    EventKind::Optin(optin) => optin.user_ref.as_deref(),
                    _ => None,
                };
                let expected = if event.is_echo() {
                    event.recipient_user_ref.as_deref()
                } else {
                    event.sender_user_ref.as_deref().or(optin_ref)
                };
                assert_eq!(expected, Some(user_ref));
            }
            None => {}
        }
        let page = event.page_side();
        if event.is_echo() {
            assert_eq!(page, event.sender.as_deref());
        } else {
            assert_eq!(page, event.recipient.as_deref());
        }

        match &event.kind {
            EventKind::Message(message) | EventKind::Echo(message) => {
                let _ = (message.quick_reply_payload(), message.reply_to_mid());
                for attachment in &message.attachments {
                    match &attachment.view {
                        AttachmentView::Location { lat, long } => {
                            assert!(lat.is_finite() && long.is_finite());
                        }
                        AttachmentView::Sticker { sticker_id, url } => {
                            let _ = (sticker_id.len(), url.as_deref());
                        }
                        AttachmentView::Media { url } => {
                            let _ = url.as_deref();
                        }
                        AttachmentView::Fallback { url, title } => {
                            let _ = (url.as_deref(), title.as_deref());
                        }
                        AttachmentView::Unknown => {}
                    }
                }
            }
            EventKind::Unknown { key } => {
                assert!(!matches!(
                    key.as_str(),
                    "sender" | "recipient" | "timestamp"
                ));
            }
            _ => {}
        }

        // Debug output is what reaches the logs: it never carries the raw item, and it does not depend on the
        // value of a credential (the account-linking code, the notification-messages token).
        let debug = format!("{event:?}");
        let mut other = event.clone();
        match &mut other.kind {
            EventKind::AccountLinking(linking) if linking.authorization_code.is_some() => {
                linking.authorization_code = Some("other-code".to_owned());
                assert_eq!(debug, format!("{other:?}"), "authorization code in Debug");
            }
            EventKind::Optin(optin) if optin.notification_messages_token.is_some() => {
                optin.notification_messages_token = Some("other-token".to_owned());
                assert_eq!(debug, format!("{other:?}"), "optin token in Debug");
            }
            _ => {}
        }
    }
    assert_eq!(walked, count);
});
