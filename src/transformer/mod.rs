//! WebAssembly transformer plugins: the sandboxed wasmtime runtime, its limits, and the plugin store.
//!
//! - [`inspect`]: validates an uploaded component without compiling it (hooks, imports, contract version).
//! - [`runtime`]: the engine, precompilation, and one instance per turn ([`runtime::Turn`]).
//! - [`lane`]: the one task that runs the plugin work of every turn, and what keeps it from being held.
//! - [`host`]: what a plugin may reach: log, session storage, WASI with nothing granted, HTTP behind [`http`].
//! - [`store`]: content-addressed plugin files, activation, rollback, survival across restarts.
//! - [`types`], [`validate`], [`error`]: plain host-side values, contract checks, errors.

mod bindings;
pub mod cli;
pub mod error;
pub mod hooks;
pub mod host;
pub mod http;
pub mod inspect;
pub mod lane;
pub mod runtime;
pub mod storage;
pub mod store;
pub mod types;
pub mod validate;

pub use error::{HookError, PluginError};
pub use runtime::{Plugin, Runtime, Turn};
pub use types::*;
