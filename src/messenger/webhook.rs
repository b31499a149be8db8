//! Meta's Messenger webhook body: the typed event model and its parser.
//!
//! The parser faces the internet, so it fails only when the body is not a JSON object. Anything odd inside
//! (a missing `entry`, an item that is not an object, a known key with the wrong shape) costs one warning and
//! at most that item, never the whole batch: Meta retries failed deliveries for hours, and one bad item must
//! not hold back the other events of its body.
//!
//! The body is parsed once into borrowed [`RawValue`] slices (top level, entries, items); each item is then
//! decoded on its own, and its exact bytes are kept in [`Event::raw`] for consumers that must see what Meta sent.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::error::Category;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Timestamps below this are seconds: 10^11 ms is in 1973, 10^11 s in the year 5138.
const SECONDS_THRESHOLD: i64 = 100_000_000_000;

/// Bounds the memory a hostile body can make the warning list take.
const MAX_WARNINGS: usize = 64;

/// Why a webhook body could not be parsed at all. Carries no part of the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("webhook body is not valid JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("webhook body is JSON but not an object")]
    NotObject,
}

/// One webhook call: `{"object": ..., "entry": [...]}`.
#[derive(Debug, Clone, Default)]
pub struct Notification {
    /// `"page"` for Messenger; empty when absent or not a string.
    pub object: String,
    pub entries: Vec<Entry>,
    /// What was skipped or kept as unknown, with its place in the body. Never holds message content.
    pub warnings: Vec<String>,
}

impl Notification {
    /// Every event of every entry, in body order, with the entry it came in.
    pub fn events(&self) -> impl Iterator<Item = (&Entry, &Event)> {
        self.entries
            .iter()
            .flat_map(|entry| entry.events.iter().map(move |event| (entry, event)))
    }

    pub fn event_count(&self) -> usize {
        self.entries.iter().map(|entry| entry.events.len()).sum()
    }
}

/// Whether the notification is about a Facebook Page (the only object Ferry serves).
pub fn is_page_object(notification: &Notification) -> bool {
    notification.object == "page"
}

/// One element of `entry[]`: the updates of one Page.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// The Page id, kept as a string even when Meta sends a number; empty when absent.
    pub id: String,
    /// `entry.time`, normalised to milliseconds; 0 when absent.
    pub time_ms: i64,
    /// Items of `messaging[]` then of `standby[]`, each list in body order.
    pub events: Vec<Event>,
}

/// Which list of the entry an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// `entry[].messaging[]`: this app owns the thread (or no routing is in place).
    Messaging,
    /// `entry[].standby[]`: another app owns the thread; this app only listens.
    Standby,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Messaging => "messaging",
            Source::Standby => "standby",
        }
    }
}

/// One messaging item.
#[derive(Clone)]
pub struct Event {
    pub source: Source,
    /// `sender.id`: absent for checkbox-plugin optins, `app_roles`, `policy-enforcement`.
    pub sender: Option<String>,
    /// `sender.user_ref`: guests of the chat plugin have one instead of an id.
    pub sender_user_ref: Option<String>,
    /// `recipient.id`.
    pub recipient: Option<String>,
    /// `recipient.user_ref`, the recipient of an echo of a message sent to a `user_ref`.
    pub recipient_user_ref: Option<String>,
    /// Milliseconds; values that are clearly seconds are scaled, and a missing timestamp takes the entry's.
    pub timestamp_ms: i64,
    pub kind: EventKind,
    /// The messaging item exactly as received, byte for byte.
    pub raw: Box<RawValue>,
}

// Hand-written so that Debug output (logs) never carries the raw item, which may hold tokens.
impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("source", &self.source)
            .field("sender", &self.sender)
            .field("sender_user_ref", &self.sender_user_ref)
            .field("recipient", &self.recipient)
            .field("recipient_user_ref", &self.recipient_user_ref)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("kind", &self.kind)
            .field("raw", &format_args!("<{} bytes>", self.raw.get().len()))
            .finish()
    }
}

/// How to address the user of an event in the Send API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKey<'a> {
    /// A page-scoped id: `recipient.id`.
    Psid(&'a str),
    /// A plugin reference: `recipient.user_ref`.
    UserRef(&'a str),
}

impl<'a> UserKey<'a> {
    pub fn as_str(self) -> &'a str {
        match self {
            UserKey::Psid(id) | UserKey::UserRef(id) => id,
        }
    }
}

impl Event {
    /// Stable label for metrics and configuration.
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }

    pub fn is_echo(&self) -> bool {
        matches!(self.kind, EventKind::Echo(_))
    }

    /// The user side of the conversation: the sender of user events, the recipient of echoes, the optin's
    /// `user_ref` when there is no sender.
    pub fn user(&self) -> Option<UserKey<'_>> {
        if self.is_echo() {
            return party_key(&self.recipient, &self.recipient_user_ref);
        }
        party_key(&self.sender, &self.sender_user_ref).or_else(|| match &self.kind {
            EventKind::Optin(optin) => optin.user_ref.as_deref().map(UserKey::UserRef),
            _ => None,
        })
    }

    /// [`Event::user`] as a plain string (a PSID or a `user_ref`).
    pub fn user_id(&self) -> Option<&str> {
        self.user().map(UserKey::as_str)
    }

    /// The Page side: the recipient of user events, the sender of echoes.
    pub fn page_side(&self) -> Option<&str> {
        if self.is_echo() {
            self.sender.as_deref()
        } else {
            self.recipient.as_deref()
        }
    }
}

impl Event {
    /// What makes two deliveries the same event, within one Page: the message id of a message or postback;
    /// otherwise the user, kind and timestamp (the watermark for reads and deliveries), as Meta gives no id.
    pub fn dedup_key(&self) -> String {
        let mid = match &self.kind {
            EventKind::Message(m) | EventKind::Echo(m) => m.mid.as_deref(),
            EventKind::Postback(p) => p.mid.as_deref(),
            _ => None,
        };
        if let Some(mid) = mid {
            return format!("mid:{mid}");
        }
        let moment = match &self.kind {
            EventKind::Read(r) => r.watermark.or(r.seq),
            EventKind::Delivery(d) => d.watermark.or(d.seq),
            _ => None,
        }
        .unwrap_or(self.timestamp_ms);
        format!(
            "{}:{}:{moment}",
            self.kind_name(),
            self.user_id().unwrap_or("")
        )
    }
}

/// Parses one messaging item stored by the inbox (see [`Event::raw`]); `None` when it is not an object.
pub fn parse_stored(raw: &str) -> Option<Event> {
    let raw: Box<RawValue> = serde_json::from_str(raw).ok()?;
    let mut warnings = Warnings::default();
    let path = ItemPath {
        place: ListPlace {
            entry: 0,
            list: "messaging",
        },
        index: 0,
    };
    parse_item(&raw, Source::Messaging, 0, path, &mut warnings)
}

fn party_key<'a>(id: &'a Option<String>, user_ref: &'a Option<String>) -> Option<UserKey<'a>> {
    id.as_deref()
        .map(UserKey::Psid)
        .or_else(|| user_ref.as_deref().map(UserKey::UserRef))
}

/// What a messaging item is about, chosen by its key.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Message(Message),
    /// A message the Page sent (by this app, another app or a human in the inbox). Never feed it to the bot.
    Echo(Message),
    Postback(Postback),
    Referral(Referral),
    Optin(Optin),
    Read(Read),
    Delivery(Delivery),
    Reaction(Reaction),
    MessageEdit(MessageEdit),
    AccountLinking(AccountLinking),
    PassThreadControl(Handover),
    TakeThreadControl(Handover),
    RequestThreadControl(Handover),
    /// `{"<app_id>": ["primary_receiver", ...]}`.
    AppRoles(Value),
    PolicyEnforcement(PolicyEnforcement),
    /// A key this parser does not know, or a known key whose value had the wrong shape. `key` is the first key
    /// other than sender/recipient/timestamp (empty when there is none).
    Unknown {
        key: String,
    },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Message(_) => "message",
            EventKind::Echo(_) => "echo",
            EventKind::Postback(_) => "postback",
            EventKind::Referral(_) => "referral",
            EventKind::Optin(_) => "optin",
            EventKind::Read(_) => "read",
            EventKind::Delivery(_) => "delivery",
            EventKind::Reaction(_) => "reaction",
            EventKind::MessageEdit(_) => "message_edit",
            EventKind::AccountLinking(_) => "account_linking",
            EventKind::PassThreadControl(_) => "pass_thread_control",
            EventKind::TakeThreadControl(_) => "take_thread_control",
            EventKind::RequestThreadControl(_) => "request_thread_control",
            EventKind::AppRoles(_) => "app_roles",
            EventKind::PolicyEnforcement(_) => "policy_enforcement",
            EventKind::Unknown { .. } => "unknown",
        }
    }
}

/// `message` (and its echo).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Message {
    pub mid: Option<String>,
    pub text: Option<String>,
    pub quick_reply: Option<QuickReply>,
    pub reply_to: Option<ReplyTo>,
    #[serde(deserialize_with = "null_as_default")]
    pub attachments: Vec<Attachment>,
    /// Set on sticker messages beside the attachment's own `sticker_id`.
    #[serde(deserialize_with = "lenient_id")]
    pub sticker_id: Option<String>,
    /// Ad or shop context of a message that started from a referral.
    pub referral: Option<Referral>,
    /// The user unsent the message.
    #[serde(deserialize_with = "null_as_default")]
    pub is_deleted: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub is_echo: bool,
    /// Echoes: the app that sent the message (the Page Inbox's id for a human agent).
    #[serde(deserialize_with = "lenient_id")]
    pub app_id: Option<String>,
    /// Echoes: the `metadata` the sender attached.
    pub metadata: Option<String>,
}

impl Message {
    pub fn quick_reply_payload(&self) -> Option<&str> {
        self.quick_reply.as_ref()?.payload.as_deref()
    }

    pub fn reply_to_mid(&self) -> Option<&str> {
        self.reply_to.as_ref()?.mid.as_deref()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct QuickReply {
    pub payload: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ReplyTo {
    pub mid: Option<String>,
}

/// One element of `message.attachments[]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "RawAttachment")]
pub struct Attachment {
    /// `type` as sent (`image`, `fallback`, `template`, ...); empty when absent.
    pub type_name: String,
    /// `payload` as sent, so that types without a typed view lose nothing.
    pub payload: Option<Value>,
    pub view: AttachmentView,
}

/// The typed reading of an attachment.
#[derive(Debug, Clone, PartialEq)]
pub enum AttachmentView {
    /// image, audio, video, file, reel, ig_reel, post, ig_post.
    Media { url: Option<String> },
    /// An image with a `sticker_id` (the "like" thumb is one).
    Sticker {
        sticker_id: String,
        url: Option<String>,
    },
    /// A shared link Messenger could not render; its payload may be absent, with title and URL beside it.
    Fallback {
        url: Option<String>,
        title: Option<String>,
    },
    /// The legacy location attachment, `payload.coordinates{lat,long}`.
    Location { lat: f64, long: f64 },
    /// Any other type, or a known type whose payload did not fit: read [`Attachment::payload`].
    Unknown,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawAttachment {
    #[serde(rename = "type")]
    type_name: Option<String>,
    payload: Option<Value>,
    title: Option<String>,
    url: Option<String>,
    // Meta's old documentation spelled the fallback URL upper-case.
    #[serde(rename = "URL")]
    upper_url: Option<String>,
}

impl From<RawAttachment> for Attachment {
    fn from(raw: RawAttachment) -> Self {
        let type_name = raw.type_name.unwrap_or_default();
        let payload = raw.payload.as_ref();
        let view = match (type_name.as_str(), sticker_id_of(payload)) {
            ("image" | "sticker", Some(sticker_id)) => AttachmentView::Sticker {
                sticker_id,
                url: payload_str(payload, "url"),
            },
            ("image" | "audio" | "video" | "file" | "reel" | "ig_reel" | "post" | "ig_post", _) => {
                AttachmentView::Media {
                    url: payload_str(payload, "url"),
                }
            }
            ("fallback", _) => AttachmentView::Fallback {
                url: payload_str(payload, "url").or(raw.url).or(raw.upper_url),
                title: payload_str(payload, "title").or(raw.title),
            },
            ("location", _) => location_view(payload),
            _ => AttachmentView::Unknown,
        };
        Attachment {
            type_name,
            payload: raw.payload,
            view,
        }
    }
}

fn payload_str(payload: Option<&Value>, key: &str) -> Option<String> {
    payload?.get(key)?.as_str().map(str::to_owned)
}

fn sticker_id_of(payload: Option<&Value>) -> Option<String> {
    match payload?.get("sticker_id")? {
        Value::String(id) => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

fn location_view(payload: Option<&Value>) -> AttachmentView {
    let coordinates = payload.and_then(|p| p.get("coordinates"));
    let lat = coordinates
        .and_then(|c| c.get("lat"))
        .and_then(Value::as_f64);
    let long = coordinates
        .and_then(|c| c.get("long"))
        .and_then(Value::as_f64);
    match (lat, long) {
        (Some(lat), Some(long)) => AttachmentView::Location { lat, long },
        _ => AttachmentView::Unknown,
    }
}

/// `postback`: a button tap (Get Started included).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Postback {
    pub mid: Option<String>,
    pub title: Option<String>,
    pub payload: Option<String>,
    pub referral: Option<Referral>,
}

/// `referral`, also nested in postbacks and messages.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Referral {
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub source: Option<String>,
    #[serde(rename = "type")]
    pub referral_type: Option<String>,
    #[serde(deserialize_with = "lenient_id")]
    pub ad_id: Option<String>,
    pub referer_uri: Option<String>,
}

/// `optin`: the checkbox plugin (`ref`, `user_ref`) or a notification-messages opt-in (token, expiry, ...).
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Optin {
    #[serde(rename = "type")]
    pub optin_type: Option<String>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub user_ref: Option<String>,
    pub payload: Option<String>,
    pub title: Option<String>,
    pub notification_messages_token: Option<String>,
    #[serde(deserialize_with = "lenient_i64")]
    pub token_expiry_timestamp: Option<i64>,
    pub notification_messages_frequency: Option<String>,
    pub notification_messages_timezone: Option<String>,
    pub user_token_status: Option<String>,
    /// Fields this model does not name.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// Hand-written: the notification token lets anyone holding it message the user.
impl fmt::Debug for Optin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Optin")
            .field("optin_type", &self.optin_type)
            .field("reference", &self.reference)
            .field("user_ref", &self.user_ref)
            .field("payload", &self.payload)
            .field("title", &self.title)
            .field(
                "notification_messages_token",
                &redacted(&self.notification_messages_token),
            )
            .field("token_expiry_timestamp", &self.token_expiry_timestamp)
            .field(
                "notification_messages_frequency",
                &self.notification_messages_frequency,
            )
            .field(
                "notification_messages_timezone",
                &self.notification_messages_timezone,
            )
            .field("user_token_status", &self.user_token_status)
            .field("extra_keys", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

/// `read`: the user read everything up to `watermark` (ms).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Read {
    #[serde(deserialize_with = "lenient_i64")]
    pub watermark: Option<i64>,
    #[serde(deserialize_with = "lenient_i64")]
    pub seq: Option<i64>,
}

/// `delivery`: messages delivered up to `watermark` (ms); `mids` may be absent.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Delivery {
    #[serde(deserialize_with = "null_as_default")]
    pub mids: Vec<String>,
    #[serde(deserialize_with = "lenient_i64")]
    pub watermark: Option<i64>,
    #[serde(deserialize_with = "lenient_i64")]
    pub seq: Option<i64>,
}

/// `reaction`: `action` is `react` or `unreact`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Reaction {
    pub reaction: Option<String>,
    pub emoji: Option<String>,
    pub action: Option<String>,
    pub mid: Option<String>,
}

/// `message_edit`: the user edited message `mid`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct MessageEdit {
    pub mid: Option<String>,
    pub text: Option<String>,
    #[serde(deserialize_with = "lenient_i64")]
    pub num_edit: Option<i64>,
}

/// `account_linking`: `status` is `linked` (with `authorization_code`) or `unlinked`.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AccountLinking {
    pub status: Option<String>,
    pub authorization_code: Option<String>,
}

// Hand-written: the authorization code is a credential of the linked account.
impl fmt::Debug for AccountLinking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountLinking")
            .field("status", &self.status)
            .field("authorization_code", &redacted(&self.authorization_code))
            .finish()
    }
}

/// `pass_thread_control`, `take_thread_control`, `request_thread_control`. App ids are strings even when
/// Meta sends numbers; `previous_owner_app_id` is absent (null) when the thread was idle.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Handover {
    #[serde(deserialize_with = "lenient_id")]
    pub previous_owner_app_id: Option<String>,
    #[serde(deserialize_with = "lenient_id")]
    pub new_owner_app_id: Option<String>,
    #[serde(deserialize_with = "lenient_id")]
    pub requested_owner_app_id: Option<String>,
    pub metadata: Option<String>,
}

/// `policy-enforcement`: `action` is `block` or `unblock`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PolicyEnforcement {
    pub action: Option<String>,
    pub reason: Option<String>,
}

/// Parses a webhook body. Fails only when the body is not a JSON object; see [`Notification::warnings`] for
/// what was skipped.
pub fn parse(body: &[u8]) -> Result<Notification, ParseError> {
    let top = parse_top_level(body)?;
    let mut warnings = Warnings::default();
    let object = match top.get("object") {
        Some(raw) => decode_object_name(raw, &mut warnings),
        None => {
            warnings.push(|| "body has no `object`".to_owned());
            String::new()
        }
    };
    let entries = match top.get("entry") {
        Some(raw) => parse_entries(raw, &mut warnings),
        None => {
            warnings.push(|| "body has no `entry`".to_owned());
            Vec::new()
        }
    };
    Ok(Notification {
        object,
        entries,
        warnings: warnings.finish(),
    })
}

fn parse_top_level(body: &[u8]) -> Result<RawObject<'_>, ParseError> {
    serde_json::from_slice(body).map_err(|err| match err.classify() {
        // Only the top-level "expected an object" can be a data error: inner values are taken raw.
        Category::Data => ParseError::NotObject,
        Category::Io | Category::Syntax | Category::Eof => ParseError::NotJson {
            line: err.line(),
            column: err.column(),
        },
    })
}

fn decode_object_name(raw: &RawValue, warnings: &mut Warnings) -> String {
    match serde_json::from_str::<String>(raw.get()) {
        Ok(object) => object,
        Err(_) => {
            warnings.push(|| format!("`object` is not a string (found {})", json_type(raw)));
            String::new()
        }
    }
}

fn parse_entries(raw: &RawValue, warnings: &mut Warnings) -> Vec<Entry> {
    let Some(items) = decode_array(raw) else {
        warnings.push(|| format!("`entry` is not an array (found {})", json_type(raw)));
        return Vec::new();
    };
    items
        .into_iter()
        .enumerate()
        .filter_map(|(index, item)| parse_entry(item, index, warnings))
        .collect()
}

fn parse_entry(raw: &RawValue, index: usize, warnings: &mut Warnings) -> Option<Entry> {
    let Ok(fields) = RawObject::parse(raw) else {
        warnings.push(|| format!("entry[{index}] is not an object (found {})", json_type(raw)));
        return None;
    };
    let id = decode_entry_id(fields.get("id"), index, warnings);
    let time_ms = fields
        .get("time")
        .and_then(|time| decode_timestamp(time, || format!("entry[{index}].time"), warnings))
        .unwrap_or(0);
    let mut entry = Entry {
        id,
        time_ms,
        events: Vec::new(),
    };
    let mut has_items = false;
    for (list, source) in [
        ("messaging", Source::Messaging),
        ("standby", Source::Standby),
    ] {
        if let Some(items) = fields.get(list) {
            has_items = true;
            let place = ListPlace { entry: index, list };
            parse_items(items, source, place, &mut entry, warnings);
        }
    }
    if !has_items {
        warnings.push(|| format!("entry[{index}] has neither `messaging` nor `standby`"));
    }
    Some(entry)
}

fn decode_entry_id(raw: Option<&RawValue>, index: usize, warnings: &mut Warnings) -> String {
    match raw.map(|raw| (raw, decode_id(raw))) {
        Some((_, Some(id))) => id,
        Some((raw, None)) => {
            warnings.push(|| {
                format!(
                    "entry[{index}].id is not a string or number (found {})",
                    json_type(raw)
                )
            });
            String::new()
        }
        None => {
            warnings.push(|| format!("entry[{index}] has no `id`"));
            String::new()
        }
    }
}

/// Where a list of items sits in the body, for warnings.
#[derive(Clone, Copy)]
struct ListPlace {
    entry: usize,
    list: &'static str,
}

impl fmt::Display for ListPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry[{}].{}", self.entry, self.list)
    }
}

fn parse_items(
    raw: &RawValue,
    source: Source,
    place: ListPlace,
    entry: &mut Entry,
    warnings: &mut Warnings,
) {
    let Some(items) = decode_array(raw) else {
        warnings.push(|| format!("{place} is not an array (found {})", json_type(raw)));
        return;
    };
    // No `reserve(items.len())`: a signed body of a million `1,1,1…` items would reserve hundreds of MB for
    // events that are then skipped (found by fuzzing).
    for (index, item) in items.into_iter().enumerate() {
        let path = ItemPath { place, index };
        if let Some(event) = parse_item(item, source, entry.time_ms, path, warnings) {
            entry.events.push(event);
        }
    }
}

/// Where an item sits in the body, for warnings.
#[derive(Clone, Copy)]
struct ItemPath {
    place: ListPlace,
    index: usize,
}

impl fmt::Display for ItemPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.place, self.index)
    }
}

fn parse_item(
    raw: &RawValue,
    source: Source,
    entry_time_ms: i64,
    path: ItemPath,
    warnings: &mut Warnings,
) -> Option<Event> {
    let Ok(fields) = RawObject::parse(raw) else {
        warnings.push(|| format!("{path} is not an object (found {})", json_type(raw)));
        return None;
    };
    let sender = decode_party(fields.get("sender"), "sender", path, warnings);
    let recipient = decode_party(fields.get("recipient"), "recipient", path, warnings);
    let timestamp_ms = fields
        .get("timestamp")
        .and_then(|time| decode_timestamp(time, || format!("{path}.timestamp"), warnings))
        .unwrap_or(entry_time_ms);
    Some(Event {
        source,
        sender: sender.id,
        sender_user_ref: sender.user_ref,
        recipient: recipient.id,
        recipient_user_ref: recipient.user_ref,
        timestamp_ms,
        kind: decode_kind(&fields, path, warnings),
        raw: raw.to_owned(),
    })
}

/// `sender` or `recipient`.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Party {
    #[serde(deserialize_with = "lenient_id")]
    id: Option<String>,
    #[serde(deserialize_with = "lenient_id")]
    user_ref: Option<String>,
}

fn decode_party(
    raw: Option<&RawValue>,
    name: &str,
    path: ItemPath,
    warnings: &mut Warnings,
) -> Party {
    let Some(raw) = raw else {
        return Party::default();
    };
    decode_object::<Party>(raw).unwrap_or_else(|| {
        warnings.push(|| {
            format!(
                "{path}.{name} has an unexpected shape (found {})",
                json_type(raw)
            )
        });
        Party::default()
    })
}

/// The keys that name an event kind, in order of precedence when an item carries several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum KindKey {
    Message,
    Postback,
    Referral,
    Optin,
    Reaction,
    MessageEdit,
    Read,
    Delivery,
    AccountLinking,
    PassThreadControl,
    TakeThreadControl,
    RequestThreadControl,
    AppRoles,
    PolicyEnforcement,
}

impl KindKey {
    fn from_key(key: &str) -> Option<Self> {
        Some(match key {
            "message" => KindKey::Message,
            "postback" => KindKey::Postback,
            "referral" => KindKey::Referral,
            "optin" => KindKey::Optin,
            "reaction" => KindKey::Reaction,
            "message_edit" => KindKey::MessageEdit,
            "read" => KindKey::Read,
            "delivery" => KindKey::Delivery,
            "account_linking" => KindKey::AccountLinking,
            "pass_thread_control" => KindKey::PassThreadControl,
            "take_thread_control" => KindKey::TakeThreadControl,
            "request_thread_control" => KindKey::RequestThreadControl,
            "app_roles" => KindKey::AppRoles,
            "policy-enforcement" => KindKey::PolicyEnforcement,
            _ => return None,
        })
    }

    fn key(self) -> &'static str {
        match self {
            KindKey::Message => "message",
            KindKey::Postback => "postback",
            KindKey::Referral => "referral",
            KindKey::Optin => "optin",
            KindKey::Reaction => "reaction",
            KindKey::MessageEdit => "message_edit",
            KindKey::Read => "read",
            KindKey::Delivery => "delivery",
            KindKey::AccountLinking => "account_linking",
            KindKey::PassThreadControl => "pass_thread_control",
            KindKey::TakeThreadControl => "take_thread_control",
            KindKey::RequestThreadControl => "request_thread_control",
            KindKey::AppRoles => "app_roles",
            KindKey::PolicyEnforcement => "policy-enforcement",
        }
    }
}

const ENVELOPE_KEYS: [&str; 3] = ["sender", "recipient", "timestamp"];

fn decode_kind(fields: &RawObject<'_>, path: ItemPath, warnings: &mut Warnings) -> EventKind {
    let chosen = fields
        .entries
        .iter()
        .filter_map(|(key, value)| KindKey::from_key(key).map(|kind| (kind, *value)))
        .min_by_key(|(kind, _)| *kind);
    let Some((kind, value)) = chosen else {
        return EventKind::Unknown {
            key: first_payload_key(fields),
        };
    };
    decode_known_kind(kind, value).unwrap_or_else(|| {
        let key = kind.key();
        warnings.push(|| {
            format!(
                "{path}.{key} has an unexpected shape (found {}); kept as unknown",
                json_type(value)
            )
        });
        EventKind::Unknown {
            key: key.to_owned(),
        }
    })
}

fn first_payload_key(fields: &RawObject<'_>) -> String {
    fields
        .entries
        .iter()
        .map(|(key, _)| key)
        .find(|key| !ENVELOPE_KEYS.contains(&key.as_ref()))
        .map(|key| key.clone().into_owned())
        .unwrap_or_default()
}

fn decode_known_kind(kind: KindKey, raw: &RawValue) -> Option<EventKind> {
    Some(match kind {
        KindKey::Message => {
            let message: Message = decode_object(raw)?;
            if message.is_echo {
                EventKind::Echo(message)
            } else {
                EventKind::Message(message)
            }
        }
        KindKey::Postback => EventKind::Postback(decode_object(raw)?),
        KindKey::Referral => EventKind::Referral(decode_object(raw)?),
        KindKey::Optin => EventKind::Optin(decode_object(raw)?),
        KindKey::Reaction => EventKind::Reaction(decode_object(raw)?),
        KindKey::MessageEdit => EventKind::MessageEdit(decode_object(raw)?),
        KindKey::Read => EventKind::Read(decode_object(raw)?),
        KindKey::Delivery => EventKind::Delivery(decode_object(raw)?),
        KindKey::AccountLinking => EventKind::AccountLinking(decode_object(raw)?),
        KindKey::PassThreadControl => EventKind::PassThreadControl(decode_object(raw)?),
        KindKey::TakeThreadControl => EventKind::TakeThreadControl(decode_object(raw)?),
        KindKey::RequestThreadControl => EventKind::RequestThreadControl(decode_object(raw)?),
        KindKey::AppRoles => EventKind::AppRoles(decode_object(raw)?),
        KindKey::PolicyEnforcement => EventKind::PolicyEnforcement(decode_object(raw)?),
    })
}

/// Decodes a JSON object into `T`. Derived struct decoding would also take an array (field by position),
/// which no Meta payload uses, so anything but an object is refused first.
fn decode_object<T: DeserializeOwned>(raw: &RawValue) -> Option<T> {
    if json_type(raw) != "object" {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

fn decode_array(raw: &RawValue) -> Option<Vec<&RawValue>> {
    serde_json::from_str(raw.get()).ok()
}

fn decode_id(raw: &RawValue) -> Option<String> {
    lenient_id(&mut serde_json::Deserializer::from_str(raw.get()))
        .ok()
        .flatten()
}

/// Reads a timestamp in seconds or milliseconds as milliseconds; warns when it is not a number.
fn decode_timestamp(
    raw: &RawValue,
    place: impl FnOnce() -> String,
    warnings: &mut Warnings,
) -> Option<i64> {
    let value = lenient_i64(&mut serde_json::Deserializer::from_str(raw.get()))
        .ok()
        .flatten();
    if value.is_none() {
        warnings.push(|| format!("{} is not a number (found {})", place(), json_type(raw)));
    }
    value.map(normalise_to_millis)
}

fn normalise_to_millis(timestamp: i64) -> i64 {
    if timestamp > 0 && timestamp < SECONDS_THRESHOLD {
        timestamp.saturating_mul(1000)
    } else {
        timestamp
    }
}

/// The JSON type of a raw value, for warnings that must not quote the value itself.
fn json_type(raw: &RawValue) -> &'static str {
    // A RawValue never starts with whitespace, so its first byte tells the type.
    match raw.get().as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

/// Warnings of one parse, capped so that a hostile body cannot make them grow without bound.
#[derive(Default)]
struct Warnings {
    list: Vec<String>,
    dropped: usize,
}

impl Warnings {
    fn push(&mut self, warning: impl FnOnce() -> String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(warning());
        } else {
            self.dropped += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.list
                .push(format!("{} more warnings not shown", self.dropped));
        }
        self.list
    }
}

/// The members of a JSON object in body order, values left raw. Body order matters (the unknown key is
/// the first one) and duplicate keys must not fail a body: the first occurrence wins in [`RawObject::get`].
struct RawObject<'a> {
    entries: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RawObject<'a> {
    fn parse(raw: &'a RawValue) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw.get())
    }

    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.entries
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| *value)
    }
}

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawObjectVisitor)
    }
}

struct RawObjectVisitor;

impl<'de> Visitor<'de> for RawObjectVisitor {
    type Value = RawObject<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(MemberName(name)) = map.next_key()? {
            entries.push((name, map.next_value::<&'de RawValue>()?));
        }
        Ok(RawObject { entries })
    }
}

/// An object key, borrowed from the body unless it holds escapes.
struct MemberName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(MemberNameVisitor)
    }
}

struct MemberNameVisitor;

impl<'de> Visitor<'de> for MemberNameVisitor {
    type Value = MemberName<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
        Ok(MemberName(Cow::Borrowed(name)))
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(MemberName(Cow::Owned(name.to_owned())))
    }

    fn visit_string<E: de::Error>(self, name: String) -> Result<Self::Value, E> {
        Ok(MemberName(Cow::Owned(name)))
    }
}

/// `null` reads as the default (empty list, false) instead of failing the whole event.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// An id Meta sends as a string or a number (app ids, sticker ids, ad ids, Page ids), kept as a string.
fn lenient_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    deserializer.deserialize_any(LenientIdVisitor)
}

struct LenientIdVisitor;

impl Visitor<'_> for LenientIdVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an id as a string or a number")
    }

    fn visit_str<E: de::Error>(self, id: &str) -> Result<Self::Value, E> {
        Ok(Some(id.to_owned()))
    }

    fn visit_string<E: de::Error>(self, id: String) -> Result<Self::Value, E> {
        Ok(Some(id))
    }

    fn visit_i64<E: de::Error>(self, id: i64) -> Result<Self::Value, E> {
        Ok(Some(id.to_string()))
    }

    fn visit_u64<E: de::Error>(self, id: u64) -> Result<Self::Value, E> {
        Ok(Some(id.to_string()))
    }

    // Ids above u64 arrive as floats; their digits are already lost, so keep what is left.
    fn visit_f64<E: de::Error>(self, id: f64) -> Result<Self::Value, E> {
        Ok(Some(id.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A whole number that may arrive as a float or a numeric string (timestamps, watermarks, counters).
fn lenient_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    deserializer.deserialize_any(LenientI64Visitor)
}

struct LenientI64Visitor;

impl Visitor<'_> for LenientI64Visitor {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Some(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Some(i64::try_from(value).unwrap_or(i64::MAX)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        if value.is_finite() {
            // `as` saturates at the i64 bounds, which is what an absurd timestamp deserves.
            Ok(Some(value as i64))
        } else {
            Err(E::custom("not a finite number"))
        }
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| E::custom("not a whole number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(item: Value) -> Event {
        let body = json!({"object": "page", "entry": [{"id": "P", "time": 1_700_000_000_000_i64, "messaging": [item]}]});
        let n = parse(body.to_string().as_bytes()).expect("parses");
        assert_eq!(n.event_count(), 1, "{:?}", n.warnings);
        n.entries
            .into_iter()
            .next()
            .and_then(|e| e.events.into_iter().next())
            .expect("one event")
    }

    fn user_item(key: &str, value: Value) -> Value {
        json!({"sender": {"id": "U"}, "recipient": {"id": "P"}, "timestamp": 1_700_000_000_123_i64, key: value})
    }

    #[test]
    fn dedup_keys_use_the_mid_else_user_kind_and_moment() {
        let m = one(user_item("message", json!({"mid": "m1", "text": "hi"})));
        assert_eq!(m.dedup_key(), "mid:m1");
        let p = one(user_item("postback", json!({"mid": "m2", "payload": "GO"})));
        assert_eq!(p.dedup_key(), "mid:m2");
        let r = one(user_item("read", json!({"watermark": 42})));
        assert_eq!(r.dedup_key(), "read:U:42");
        let f = one(user_item("referral", json!({"ref": "x"})));
        assert_eq!(f.dedup_key(), "referral:U:1700000000123");
        // Two different users reading at the same watermark are two events.
        let mut other = user_item("read", json!({"watermark": 42}));
        other["sender"]["id"] = json!("V");
        assert_ne!(one(other).dedup_key(), r.dedup_key());
    }

    #[test]
    fn stored_items_parse_back_to_the_same_event() {
        let e = one(user_item("message", json!({"mid": "m1", "text": "hi"})));
        let back = parse_stored(e.raw.get()).expect("parses");
        assert_eq!(back.kind, e.kind);
        assert_eq!(back.user_id(), Some("U"));
        assert_eq!(back.timestamp_ms, e.timestamp_ms);
        assert_eq!(back.raw.get(), e.raw.get());
        assert!(parse_stored("[1]").is_none());
        assert!(parse_stored("not json").is_none());
    }

    #[test]
    fn text_message_quick_reply_reply_to_and_deleted() {
        let e = one(user_item(
            "message",
            json!({"mid": "m1", "text": "hi", "quick_reply": {"payload": "QR"}, "reply_to": {"mid": "m0"}}),
        ));
        let EventKind::Message(m) = &e.kind else {
            panic!("{:?}", e.kind)
        };
        assert_eq!(m.text.as_deref(), Some("hi"));
        assert_eq!(m.quick_reply_payload(), Some("QR"));
        assert_eq!(m.reply_to_mid(), Some("m0"));
        assert_eq!(e.user_id(), Some("U"));
        assert_eq!(e.page_side(), Some("P"));
        assert_eq!(e.timestamp_ms, 1_700_000_000_123);
        let e = one(user_item(
            "message",
            json!({"mid": "m2", "is_deleted": true}),
        ));
        let EventKind::Message(m) = &e.kind else {
            panic!()
        };
        assert!(m.is_deleted);
    }

    #[test]
    fn every_attachment_type_is_read() {
        let e = one(user_item(
            "message",
            json!({"mid": "m", "attachments": [
                {"type": "image", "payload": {"url": "https://x/i.png"}},
                {"type": "audio", "payload": {"url": "https://x/a.mp4"}},
                {"type": "video", "payload": {"url": "https://x/v.mp4"}},
                {"type": "file", "payload": {"url": "https://x/f.pdf"}},
                {"type": "image", "payload": {"url": "https://x/s.png", "sticker_id": 369239263222822_i64}},
                {"type": "fallback", "title": "A link", "URL": "https://x/l"},
                {"type": "location", "payload": {"coordinates": {"lat": 52.5, "long": 13.4}}},
                {"type": "template", "payload": {"template_type": "generic"}}
            ]}),
        ));
        let EventKind::Message(m) = &e.kind else {
            panic!()
        };
        let views: Vec<&AttachmentView> = m.attachments.iter().map(|a| &a.view).collect();
        assert_eq!(
            views[0],
            &AttachmentView::Media {
                url: Some("https://x/i.png".into())
            }
        );
        assert_eq!(
            views[3],
            &AttachmentView::Media {
                url: Some("https://x/f.pdf".into())
            }
        );
        assert_eq!(
            views[4],
            &AttachmentView::Sticker {
                sticker_id: "369239263222822".into(),
                url: Some("https://x/s.png".into())
            }
        );
        assert_eq!(
            views[5],
            &AttachmentView::Fallback {
                url: Some("https://x/l".into()),
                title: Some("A link".into())
            }
        );
        assert_eq!(
            views[6],
            &AttachmentView::Location {
                lat: 52.5,
                long: 13.4
            }
        );
        assert_eq!(views[7], &AttachmentView::Unknown);
        assert_eq!(
            m.attachments[7].payload,
            Some(json!({"template_type": "generic"}))
        );
    }

    #[test]
    fn echo_is_its_own_kind_and_its_page_side_is_the_sender() {
        let e = one(
            json!({"sender": {"id": "P"}, "recipient": {"id": "U"}, "timestamp": 5,
            "message": {"mid": "e", "is_echo": true, "app_id": 42, "text": "bot"}}),
        );
        assert!(e.is_echo());
        assert_eq!(e.kind_name(), "echo");
        assert_eq!(e.page_side(), Some("P"));
        assert_eq!(e.user_id(), Some("U"));
    }

    #[test]
    fn postback_referral_optin_and_the_rest() {
        let e = one(user_item(
            "postback",
            json!({"title": "Start", "payload": "GET_STARTED", "referral": {"ref": "ad7", "source": "ADS", "type": "OPEN_THREAD"}}),
        ));
        let EventKind::Postback(p) = &e.kind else {
            panic!()
        };
        assert_eq!(p.payload.as_deref(), Some("GET_STARTED"));
        assert_eq!(
            p.referral.as_ref().and_then(|r| r.reference.as_deref()),
            Some("ad7")
        );

        let e = one(user_item(
            "referral",
            json!({"ref": "shortlink", "source": "SHORTLINK", "type": "OPEN_THREAD"}),
        ));
        assert_eq!(e.kind_name(), "referral");

        let e = one(
            json!({"recipient": {"id": "P"}, "timestamp": 7, "optin": {"ref": "cb", "user_ref": "UR1"}}),
        );
        let EventKind::Optin(o) = &e.kind else {
            panic!()
        };
        assert_eq!(o.user_ref.as_deref(), Some("UR1"));
        assert_eq!(e.sender, None);
        assert_eq!(e.user(), Some(UserKey::UserRef("UR1")));

        let cases = [
            ("read", json!({"watermark": 1}), "read"),
            (
                "delivery",
                json!({"mids": ["a"], "watermark": 1}),
                "delivery",
            ),
            (
                "reaction",
                json!({"mid": "m", "action": "react", "reaction": "love"}),
                "reaction",
            ),
            (
                "message_edit",
                json!({"mid": "m", "text": "t", "num_edit": 1}),
                "message_edit",
            ),
            (
                "account_linking",
                json!({"status": "linked", "authorization_code": "secret"}),
                "account_linking",
            ),
            (
                "pass_thread_control",
                json!({"new_owner_app_id": 123, "metadata": ""}),
                "pass_thread_control",
            ),
            (
                "take_thread_control",
                json!({"previous_owner_app_id": "1"}),
                "take_thread_control",
            ),
            (
                "request_thread_control",
                json!({"requested_owner_app_id": "1"}),
                "request_thread_control",
            ),
            (
                "app_roles",
                json!({"123": ["primary_receiver"]}),
                "app_roles",
            ),
            (
                "policy-enforcement",
                json!({"action": "block", "reason": "spam"}),
                "policy_enforcement",
            ),
            ("brand_new_kind", json!({"x": 1}), "unknown"),
        ];
        for (key, value, name) in cases {
            let e = one(user_item(key, value));
            assert_eq!(e.kind_name(), name, "{key}");
        }
    }

    #[test]
    fn account_linking_code_and_optin_token_stay_out_of_debug() {
        let e = one(user_item(
            "account_linking",
            json!({"status": "linked", "authorization_code": "CODE123"}),
        ));
        assert!(!format!("{e:?}").contains("CODE123"));
        let e = one(user_item(
            "optin",
            json!({"type": "notification_messages", "notification_messages_token": "TOK9"}),
        ));
        assert!(!format!("{e:?}").contains("TOK9"));
    }

    #[test]
    fn unknown_kinds_keep_their_raw_bytes_and_seconds_become_milliseconds() {
        let raw = r#"{"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":1700000000,"brand_new":{"caf\u00e9":1}}"#;
        let body = format!(
            r#"{{"object":"page","entry":[{{"id":"P","time":1700000000,"messaging":[{raw}]}}]}}"#
        );
        let n = parse(body.as_bytes()).expect("parses");
        let (entry, e) = n.events().next().expect("event");
        assert_eq!(e.raw.get(), raw);
        assert_eq!(
            e.kind,
            EventKind::Unknown {
                key: "brand_new".into()
            }
        );
        assert_eq!(e.timestamp_ms, 1_700_000_000_000);
        assert_eq!(entry.time_ms, 1_700_000_000_000);
    }

    #[test]
    fn standby_and_batched_entries_are_all_read_in_order() {
        let body = json!({"object": "page", "entry": [
            {"id": "P", "time": 1, "messaging": [user_item("message", json!({"mid": "a", "text": "1"}))],
             "standby": [user_item("message", json!({"mid": "b", "text": "2"}))]},
            {"id": 77, "time": 2, "messaging": [user_item("postback", json!({"payload": "X"}))]}
        ]});
        let n = parse(body.to_string().as_bytes()).expect("parses");
        let got: Vec<(&str, Source, &str)> = n
            .events()
            .map(|(en, ev)| (en.id.as_str(), ev.source, ev.kind_name()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("P", Source::Messaging, "message"),
                ("P", Source::Standby, "message"),
                ("77", Source::Messaging, "postback")
            ]
        );
    }

    #[test]
    fn malformed_bodies_are_errors_and_odd_shapes_are_warnings() {
        assert!(matches!(
            parse(b"{not json"),
            Err(ParseError::NotJson { .. })
        ));
        assert_eq!(parse(b"[1,2]").err(), Some(ParseError::NotObject));
        let n = parse(br#"{"object":"page","entry":[{"id":"P","messaging":[1,"x",{"sender":{"id":"U"},"message":"oops"}]}]}"#)
            .expect("parses");
        assert!(!n.warnings.is_empty());
        assert!(n.events().all(|(_, e)| e.kind_name() == "unknown"));
    }
}
