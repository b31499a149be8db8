//! Ferry: a Messenger endpoint host with WebAssembly transformer plugins.
//!
//! Read a turn top to bottom in [`pipeline`]; the HTTP surface is in [`server`]; everything Meta-specific is
//! under [`messenger`]; the conversation backends are under [`flow`]; the Graph API emulator is [`sim`].

pub mod admin;
pub mod app;
pub mod bench;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod dispatch;
pub mod flow;
pub mod inbox;
pub mod logging;
pub mod messenger;
pub mod metrics;
pub mod pipeline;
pub mod profiles;
pub mod run;
pub mod server;
pub mod sessions;
pub mod sim;
pub mod store;
pub mod transformer;
