use clap::Parser;
use orderflow::app::{self, Roles, Shutdown};
use orderflow::config::{Cli, Command};
use orderflow::{ops, telemetry};

// The hot path allocates small strings on two threads at high rates; mimalloc
// handles that with far less contention than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = telemetry::init_logs(cli.common.log_format, cli.command.role());
    let shutdown = Shutdown::default();
    let serve = |args, roles| {
        app::cancel_on_signal(shutdown.clone());
        app::serve(&cli.common, args, roles, shutdown.clone())
    };
    let none = Roles::NONE;
    let done = match &cli.command {
        Command::Run(args) => serve(args, Roles::ALL).await,
        // Each API replica relays its own outbox rows (and any others').
        Command::Api(args) => serve(args, Roles { api: true, relay: true, ..none }).await,
        Command::Inventory(args) => serve(args, Roles { inventory: true, ..none }).await,
        Command::Notifier(args) => serve(args, Roles { notifier: true, ..none }).await,
        Command::Relay(args) => serve(args, Roles { relay: true, ..none }).await,
        Command::Migrate => ops::migrate(&cli.common).await,
        Command::Stock(c) => ops::stock(&cli.common, c.clone()).await,
        Command::Dlq(c) => ops::dlq(&cli.common, c.clone()).await,
    };
    logs.flush();
    done
}
