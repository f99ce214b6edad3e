//! `meshlens token`: bearer tokens of the REST API. `create` prints the new token once, as its last line
//! (only its SHA-256 is stored); `list` shows every token without secrets; `revoke` refuses a token from
//! then on. Works on the catalog database of the same `--data-dir`/`--database-url` as `meshlens serve`,
//! also while it runs.

use super::serve::StoreArgs;
use anyhow::Context;
use meshlens_api::Role;
use meshlens_api::tokens::{TokenError, TokenInfo, Tokens};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (once: it cannot be shown again).
    Create(CreateArgs),
    /// List tokens (id, name, role, namespace, created, last used, revoked), never their secrets.
    List(ListArgs),
    /// Revoke a token by id; requests with it are refused from then on.
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    store: StoreArgs,

    /// viewer: read every analysis; admin: also schedules, tokens and configuration.
    #[arg(long, value_parser = parse_role)]
    role: Role,

    /// Restrict the token to one namespace's data.
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,

    /// A label to recognize the token by in `token list`.
    #[arg(long, default_value = "")]
    name: String,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    store: StoreArgs,

    /// Print JSON (one array) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    store: StoreArgs,

    /// The token's id, as `token list` shows it.
    id: i64,
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

impl TokenCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        runtime.block_on(self.execute())
    }

    fn store(&self) -> &StoreArgs {
        match self {
            TokenCommand::Create(args) => &args.store,
            TokenCommand::List(args) => &args.store,
            TokenCommand::Revoke(args) => &args.store,
        }
    }

    async fn execute(self) -> anyhow::Result<ExitCode> {
        let store = self.store();
        let tokens = Tokens::connect(&store.config())
            .await
            .with_context(|| format!("opening the token database of the store in {}", store.data_dir.display()))?;
        let result = match self {
            TokenCommand::Create(args) => create(&tokens, args).await,
            TokenCommand::List(args) => list(&tokens, args.json).await,
            TokenCommand::Revoke(args) => revoke(&tokens, args.id).await,
        };
        tokens.close().await;
        result
    }
}

async fn create(tokens: &Tokens, args: CreateArgs) -> anyhow::Result<ExitCode> {
    let created = match tokens.create(args.role, args.namespace.as_deref(), &args.name).await {
        Ok(created) => created,
        Err(TokenError::Invalid(reason)) => {
            eprintln!("meshlens token create: {reason}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let info = &created.info;
    eprintln!(
        "created token {} (role {}, {}); it is shown once, below — store it now",
        info.id,
        info.role,
        info.namespace.as_deref().map_or_else(|| "all namespaces".to_owned(), |ns| format!("namespace {ns}"))
    );
    println!("{}", created.secret);
    Ok(ExitCode::SUCCESS)
}

fn show_time(time: Option<chrono::DateTime<chrono::Utc>>) -> String {
    time.map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

async fn list(tokens: &Tokens, json: bool) -> anyhow::Result<ExitCode> {
    let all: Vec<TokenInfo> = tokens.list().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>4}  {:<20}  {:<6}  {:<20}  {:<20}  {:<20}  {:<20}",
        "ID", "NAME", "ROLE", "NAMESPACE", "CREATED", "LAST USED", "REVOKED"
    );
    for token in &all {
        println!(
            "{:>4}  {:<20}  {:<6}  {:<20}  {:<20}  {:<20}  {:<20}",
            token.id,
            if token.name.is_empty() { "-" } else { &token.name },
            token.role,
            token.namespace.as_deref().unwrap_or("*"),
            show_time(Some(token.created_at)),
            show_time(token.last_used_at),
            show_time(token.revoked_at)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn revoke(tokens: &Tokens, id: i64) -> anyhow::Result<ExitCode> {
    match tokens.revoke(id).await {
        Ok(token) => {
            eprintln!("revoked token {} ({})", token.id, if token.name.is_empty() { "unnamed" } else { &token.name });
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (TokenError::NotFound(_) | TokenError::AlreadyRevoked(_))) => {
            eprintln!("meshlens token revoke: {e}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
