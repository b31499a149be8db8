//! Everything Ferry knows about Meta's Messenger Platform: the webhook model and its parser, signatures, the
//! Graph API client (Send API, profiles), and the conversion of flow outputs into Send API messages.

pub mod convert;
pub mod graph;
pub mod rate_limit;
pub mod signature;
pub mod webhook;
