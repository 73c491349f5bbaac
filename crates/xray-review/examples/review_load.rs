//! Load test of the review service: a database of `--cases` cases (10,000 by default), `--readers`
//! concurrent readers (20) browsing the worklist, opening cases and deciding, while the
//! inference worker reads real films in the background. Prints latency percentiles per page as
//! JSON lines, with the CPU model.
//!
//! ```text
//! cargo run --release -p xray-review --example review_load -- \
//!     --model models/mobilenet_v2 --films ../shared/data/kermany224/train/PNEUMONIA
//! ```

#[path = "../tests/common/client.rs"]
mod client;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::{Rng, SeedableRng};
use xray_review::model::Role;
use xray_review::{auth, AppState, Db, FilmStore, Inference, WebConfig, Worker};

#[derive(Parser)]
struct Args {
    /// Bundle the background worker reads films with.
    #[arg(long, default_value = "models/mobilenet_v2")]
    model: PathBuf,
    /// Folder of real films queued for the worker during the test.
    #[arg(long, default_value = "../shared/data/kermany224/train/PNEUMONIA")]
    films: PathBuf,
    /// How many of them to queue.
    #[arg(long, default_value_t = 300)]
    queue: usize,
    /// Cases already in the database (synthetic model outputs).
    #[arg(long, default_value_t = 10_000)]
    cases: usize,
    /// Concurrent readers.
    #[arg(long, default_value_t = 20)]
    readers: usize,
    /// How long they work, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Pause between one reader's requests, in milliseconds.
    #[arg(long, default_value_t = 250)]
    think_ms: u64,
    /// Seed of the synthetic cases and the readers' choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

const PASSWORD: &str = "load test password";

fn seed_cases(db: &Db, n: usize, seed: u64) -> anyhow::Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    db.write("seed cases", |tx| {
        let mut insert = tx.prepare(
            "INSERT INTO cases (film_sha256, kind, original_name, uploaded_at, status, width, height, \
             probability, calibrated, model_decision, operating_point, threshold, refer_reasons, \
             bundle_sha256, priority) VALUES (?1, 'jpeg', ?2, 0, 'done', 224, 224, ?3, ?3, ?4, \
             'default', 0.5, ?5, 'synthetic', ?6)",
        )?;
        for i in 0..n {
            let p: f64 = rng.random();
            let decision = if (0.4..0.6).contains(&p) {
                "refer"
            } else if p >= 0.6 {
                "pneumonia"
            } else {
                "normal"
            };
            let reasons = if decision == "refer" { "[\"uncertain\"]" } else { "[]" };
            insert.execute(rusqlite::params![
                format!("{i:064x}"),
                format!("synthetic-{i}.jpeg"),
                p,
                decision,
                reasons,
                xray_review::model::priority(decision)
            ])?;
        }
        Ok(())
    })?;
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let db = Arc::new(Db::open(&dir.path().join("load.sqlite"))?);
    let store = FilmStore::open(&dir.path().join("files"))?;
    let hash = auth::hash_password("reader", PASSWORD)?;
    for r in 0..args.readers {
        db.add_user(&format!("reader{r:02}"), &hash, Role::Reader)?;
    }
    seed_cases(&db, args.cases, args.seed)?;
    let mut films: Vec<PathBuf> = std::fs::read_dir(&args.films)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    films.sort();
    films.truncate(args.queue);
    for path in &films {
        let bytes = std::fs::read(path)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("film");
        xray_review::ingest::ingest(&db, &store, name, &bytes, None, "import")?;
    }
    let queued_before = db.queued_count()?;

    let inference = Arc::new(Inference::load(&args.model)?);
    let worker = Worker::spawn(db.clone(), store.clone(), inference);
    let state = AppState::new(db.clone(), store, worker.waker(), WebConfig::default());
    let runtime = tokio::runtime::Runtime::new()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let base = format!("http://{}", listener.local_addr()?);
    runtime.spawn(async move { axum::serve(listener, xray_review::router(state)).await });

    let latencies: Arc<Mutex<BTreeMap<&'static str, Vec<f64>>>> = Arc::default();
    let errors = Arc::new(Mutex::new(0usize));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let threads: Vec<_> = (0..args.readers)
        .map(|r| {
            let (base, latencies, errors) = (base.clone(), latencies.clone(), errors.clone());
            let (cases, think, seed) = (
                args.cases as i64,
                Duration::from_millis(args.think_ms),
                args.seed,
            );
            std::thread::spawn(move || -> anyhow::Result<()> {
                let reader = client::Reader::sign_in(&base, &format!("reader{r:02}"), PASSWORD)
                    .map_err(anyhow::Error::msg)?;
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 1 + r as u64);
                let timed =
                    |kind: &'static str, f: &dyn Fn() -> Result<client::Reply, String>, ok: u16| {
                        let start = Instant::now();
                        let reply = f();
                        let ms = start.elapsed().as_secs_f64() * 1e3;
                        match reply {
                            Ok(reply) if reply.status == ok => {
                                latencies.lock().unwrap().entry(kind).or_default().push(ms)
                            }
                            _ => *errors.lock().unwrap() += 1,
                        }
                    };
                while Instant::now() < deadline {
                    let page = rng.random_range(1..=5);
                    let filter = ["pending", "pending", "referred", "all"][rng.random_range(0..4)];
                    timed(
                        "worklist",
                        &|| reader.get(&format!("/worklist?filter={filter}&page={page}")),
                        200,
                    );
                    std::thread::sleep(think);
                    let id = rng.random_range(1..=cases);
                    timed("case", &|| reader.get(&format!("/cases/{id}")), 200);
                    std::thread::sleep(think);
                    let reading = ["pneumonia", "normal", "uncertain"][rng.random_range(0..3)];
                    timed(
                        "decision",
                        &|| {
                            reader.post_form(
                                &format!("/cases/{id}/decisions"),
                                &[("reading", reading), ("reason", "load test")],
                            )
                        },
                        303,
                    );
                    std::thread::sleep(think);
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a reader thread panicked"))??;
    }
    let read_during = queued_before - db.queued_count()?;
    drop(worker);
    let cpu = cpu_model();
    for (kind, mut ms) in latencies.lock().unwrap().clone() {
        ms.sort_by(f64::total_cmp);
        println!(
            "{}",
            serde_json::json!({
                "page": kind, "requests": ms.len(),
                "p50_ms": percentile(&ms, 0.5), "p95_ms": percentile(&ms, 0.95),
                "p99_ms": percentile(&ms, 0.99), "max_ms": ms[ms.len() - 1],
                "cases": args.cases, "readers": args.readers, "think_ms": args.think_ms,
                "seconds": args.seconds, "films_read_by_worker": read_during,
                "cpu": cpu, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            })
        );
    }
    println!(
        "{}",
        serde_json::json!({ "errors": *errors.lock().unwrap() })
    );
    Ok(())
}
