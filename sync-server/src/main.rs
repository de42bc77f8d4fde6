//! `fitedge-server`: serve (default), migrate, and operator commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fitedge_server::auth::{Role, Tier};
use fitedge_server::{identity, Config};

/// jemalloc rather than the system allocator: the sync context loads documents and evicts them
/// when idle, and glibc's malloc keeps what eviction frees for reuse, so the process's memory
/// stayed at its peak working set; jemalloc gives unused pages back after its decay time (10 s
/// by default, `_RJEM_MALLOC_CONF` tunes it). ADR 0009, BENCHMARKS.md (100,000 stored documents).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "fitedge-server", version, about = "FitEdge server")]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Operator commands on accounts.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Set a user's role: user, administrator or partner.
    SetRole { email: String, role: Role },
    /// Set a user's subscription tier: free, premium or pro.
    SetTier { email: String, tier: Tier },
}

#[allow(clippy::print_stderr, clippy::print_stdout)] // the binary's own output
fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None | Some(Command::Serve) => fitedge_server::run(cli.config),
        Some(Command::Migrate) => operator(cli.config, |_| Box::pin(async { Ok(true) }))
            .map(|_| println!("migrations applied")),
        Some(Command::User(UserCommand::SetRole { email, role })) => {
            let e = email.clone();
            operator(cli.config, move |s| {
                Box::pin(async move { identity::set_role(&s, &e, role).await })
            })
            .and_then(|found| found_or_err(found, &email))
            .map(|_| println!("{email}: role set to {role}"))
        }
        Some(Command::User(UserCommand::SetTier { email, tier })) => {
            let e = email.clone();
            operator(cli.config, move |s| {
                Box::pin(async move { identity::set_tier(&s, &e, tier).await })
            })
            .and_then(|found| found_or_err(found, &email))
            .map(|_| println!("{email}: tier set to {tier}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fitedge-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn found_or_err(found: bool, email: &str) -> anyhow::Result<()> {
    if found {
        Ok(())
    } else {
        anyhow::bail!("no account with email {email}")
    }
}

type OpFuture = futures::future::BoxFuture<'static, Result<bool, fitedge_server::Error>>;

/// Runs one operator action against the configured (migrated) database.
fn operator(
    config: Config,
    f: impl FnOnce(fitedge_server::AppState) -> OpFuture,
) -> anyhow::Result<bool> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let state = fitedge_server::state_from_config(config).await?;
        let r = f(state.clone()).await;
        state.db.pool().close().await;
        Ok(r?)
    })
}
