//! Host bindings generated from `wit/transformer.wit`. Kept private to the
//! module: the rest of the crate works with the plain types in `types.rs`.

wasmtime::component::bindgen!({
    world: "transformer",
    path: "wit",
    imports: { default: trappable },
    exports: { default: async },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});
