//! The review service: `serve` it, `add-user` an account, `import` a folder of films.
//!
//! ```text
//! review_server add-user --db review.sqlite --name alice --role admin
//! review_server serve --model models/mobilenet_v2 --db review.sqlite --listen 127.0.0.1:8080
//! review_server import --db review.sqlite /path/to/films
//! ```

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use xray_review::model::Role;
use xray_review::{auth, AppState, Db, FilmStore, Inference, ReviewError, WebConfig, Worker};

#[derive(Parser)]
#[command(
    about = "Radiologist review worklist: the model assists, the reader decides. \
                   Decision support only, not a diagnosis."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the worklist over HTTP, with inference in the background.
    Serve {
        /// Model bundle folder.
        #[arg(long)]
        model: PathBuf,
        /// SQLite database (created if missing).
        #[arg(long)]
        db: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Film store folder (default: the database path with `.files` added).
        #[arg(long)]
        store: Option<PathBuf>,
        /// Largest upload request, in MiB.
        #[arg(long, default_value_t = 64)]
        max_upload_mb: usize,
        /// Mark session cookies Secure (when served behind HTTPS).
        #[arg(long)]
        secure_cookies: bool,
    },
    /// Create an account; the password is asked for on the terminal or read from the first
    /// line of standard input.
    AddUser {
        /// SQLite database (created if missing).
        #[arg(long)]
        db: PathBuf,
        /// Login name.
        #[arg(long)]
        name: String,
        /// `admin` (also sees the audit log) or `reader`.
        #[arg(long, default_value = "reader")]
        role: String,
    },
    /// Queue every film in a folder on the server (DICOM, JPEG, PNG; others are reported).
    Import {
        /// SQLite database (created if missing).
        #[arg(long)]
        db: PathBuf,
        /// Film store folder (default: the database path with `.files` added).
        #[arg(long)]
        store: Option<PathBuf>,
        /// The folder.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn store_path(db: &Path, store: Option<PathBuf>) -> PathBuf {
    store.unwrap_or_else(|| {
        let mut path = db.as_os_str().to_owned();
        path.push(".files");
        PathBuf::from(path)
    })
}

fn run(command: Command) -> Result<(), ReviewError> {
    match command {
        Command::Serve {
            model,
            db,
            listen,
            store,
            max_upload_mb,
            secure_cookies,
        } => {
            let store = FilmStore::open(&store_path(&db, store))?;
            let db = Arc::new(Db::open(&db)?);
            if db.user_count()? == 0 {
                log::warn!("no account yet: create one with `review_server add-user --db {} --name NAME --role admin`", db.path().display());
            }
            let inference = Arc::new(Inference::load(&model)?);
            log::info!(
                "bundle {} (sha256 {}), operating point {}",
                model.display(),
                inference.bundle_sha256(),
                inference.operating_point()
            );
            let worker = Worker::spawn(db.clone(), store.clone(), inference);
            let config = WebConfig {
                max_upload_bytes: max_upload_mb << 20,
                secure_cookies,
            };
            let state = AppState::new(db, store, worker.waker(), config);
            let runtime = tokio::runtime::Runtime::new()
                .map_err(|e| ReviewError::Task(format!("tokio runtime: {e}")))?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(|e| ReviewError::Task(format!("listen on {listen}: {e}")))?;
                log::info!("listening on http://{listen}");
                axum::serve(listener, xray_review::router(state))
                    .with_graceful_shutdown(shutdown_signal())
                    .await
                    .map_err(|e| ReviewError::Task(format!("server: {e}")))
            })?;
            drop(worker);
            Ok(())
        }
        Command::AddUser { db, name, role } => {
            let role = Role::parse(&role).ok_or_else(|| ReviewError::Account {
                name: name.clone(),
                reason: format!("role {role:?}: use admin or reader"),
            })?;
            auth::check_user_name(&name)?;
            let password = read_password(&name)?;
            let hash = auth::hash_password(&name, &password)?;
            let db = Db::open(&db)?;
            db.add_user(&name, &hash, role)?;
            println!(
                "account {name} ({}) created in {}",
                role.as_str(),
                db.path().display()
            );
            Ok(())
        }
        Command::Import { db, store, dir } => {
            let store = FilmStore::open(&store_path(&db, store))?;
            let db = Db::open(&db)?;
            let mut queued = 0;
            for (name, outcome) in xray_review::ingest::import_folder(&db, &store, &dir)? {
                match outcome {
                    Ok(ingested) => {
                        queued += 1;
                        println!("{name}: case {}", ingested.case_id());
                    }
                    Err(e) => println!("{name}: refused: {e}"),
                }
            }
            println!(
                "{queued} film(s) on the worklist; a running server reads them within seconds"
            );
            Ok(())
        }
    }
}

fn read_password(name: &str) -> Result<String, ReviewError> {
    let account = |reason: String| ReviewError::Account {
        name: name.to_string(),
        reason,
    };
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {name}: "))
            .map_err(|e| account(e.to_string()))?;
        let again = rpassword::prompt_password("again: ").map_err(|e| account(e.to_string()))?;
        if first != again {
            return Err(account("the two passwords differ".into()));
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| account(e.to_string()))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return interrupt.await.unwrap_or(()),
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await.unwrap_or(());
}
