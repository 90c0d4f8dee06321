//! WASI for plugins: every WASI 0.2 interface is linked, and the context a
//! call gets denies each use of what a plugin may not have.
//!
//! Linked rather than left out, because components from other toolchains
//! (componentize-py, for one) import `wasi:sockets` and `wasi:filesystem`
//! whether or not they use them, and a component with an import the host
//! does not define cannot load at all. So they load, and at run time:
//!
//! | interface | what a plugin gets |
//! |---|---|
//! | `wasi:cli/stdout`, `stderr` | captured, at most [`super::call::CAPTURED_OUTPUT_BYTES`], to explain a failure |
//! | `wasi:cli/stdin` | empty |
//! | `wasi:cli/environment` | no variables, no arguments, no initial directory |
//! | `wasi:filesystem` | no preopened directory, so no path to open |
//! | `wasi:sockets` (tcp, udp, ip-name-lookup) | every address refused, TCP and UDP off, name lookup off |
//! | `wasi:clocks`, `wasi:random` | real (a clock and randomness grant nothing) |
//! | `wasi:cli/exit` | ends the call, reported as a trap (not attempted by the attack suite) |
//!
//! `wasi:http` is not linked: a component importing it is refused at load,
//! naming the import. An attack test calls each denied interface.

use wasmtime::component::Linker;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiView};

/// Links every WASI 0.2 interface (see the module docs for what each allows).
pub fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)
}

/// A call's WASI context: `output` receives stdout and stderr; nothing else
/// is given. The socket settings are wasmtime-wasi's defaults too, stated
/// here so that a change of default cannot open them.
pub fn context(output: &MemoryOutputPipe) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(output.clone())
        .stderr(output.clone())
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}
