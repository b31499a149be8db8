//! The `ferry` command line. Everything it runs lives in the library.

use clap::{Parser, Subcommand};
use ferry::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

// glibc's allocator serialises many small allocations across threads (it showed as lock waits in the
// benchmark's profile); mimalloc keeps per-thread heaps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "A Messenger endpoint host with WebAssembly transformer plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host with a configuration file.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Play a scripted conversation through the host, the Graph API emulator and the echo flow, on loopback.
    Demo,
    /// Run the Graph API emulator alone (for developing bots locally).
    Sim(Box<ferry::sim::cli::SimArgs>),
    /// Check a configuration file and print what it configures.
    CheckConfig { file: PathBuf },
    /// Check a transformer plugin or run one of its hooks locally.
    Plugin(ferry::transformer::cli::PluginArgs),
    /// Load-test the host through the echo flow and the emulator; prints throughput and latency.
    Bench(ferry::bench::BenchArgs),
}

fn main() -> ExitCode {
    keep_backtraces_for_panics_only();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            ferry::logging::init("info");
            let config = Config::load(&config)?;
            ferry::run::serve(config, ferry::run::shutdown_signal()).await
        }
        Command::Demo => {
            ferry::logging::init("warn");
            ferry::demo::run().await
        }
        Command::Sim(args) => {
            ferry::logging::init("info");
            ferry::sim::cli::run(*args).await
        }
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            println!("{}", config.summary());
            Ok(())
        }
        Command::Plugin(args) => {
            ferry::logging::init("warn");
            ferry::transformer::cli::run(args).await
        }
        Command::Bench(args) => {
            ferry::logging::init("error");
            ferry::bench::run(args).await
        }
    }
}

/// With `RUST_BACKTRACE` set, every library error value would capture a backtrace, and wasmtime creates one
/// each time a plugin instance is dropped (it disposes of the instance's idle fiber with an error): that
/// alone cost more than the whole plugin turn. Ferry's errors carry messages, so library backtraces stay
/// off unless `RUST_LIB_BACKTRACE` asks for them; panics still get theirs.
fn keep_backtraces_for_panics_only() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // Safe here: the first thing `main` does, before any other thread exists.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}
