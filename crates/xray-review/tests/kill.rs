//! `kill -9` during uploads and decisions loses nothing that was acknowledged and leaves no
//! half-written case; after a restart the worklist is as it was and films whose inference had
//! not finished are read.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::Reader;
use common::{Server, PASSWORD};
use sha2::{Digest, Sha256};
use xray_review::model::CaseStatus;
use xray_review::Db;

/// What the server acknowledged: uploaded case ids, and (case, reason) decisions.
#[derive(Default)]
struct Acknowledged {
    cases: BTreeSet<i64>,
    decisions: BTreeSet<(i64, String)>,
}

/// Uploads films one by one and decides on every case the model has read, until the server
/// stops answering; records each acknowledgement as it arrives.
fn client_loop(
    base: String,
    films: Vec<std::path::PathBuf>,
    acks: Arc<Mutex<Acknowledged>>,
    round: usize,
) {
    let Ok(reader) = Reader::sign_in(&base, "alice", PASSWORD) else {
        return;
    };
    for (i, path) in films.iter().enumerate() {
        let bytes = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        let Ok(reply) = reader.upload(&[(name, &bytes)]) else {
            return;
        };
        if reply.status != 200 {
            return;
        }
        let accepted = reply
            .body
            .split("id=\"accepted\"")
            .nth(1)
            .unwrap_or_default();
        let id: i64 = accepted
            .split("href=\"/cases/")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|s| s.parse().ok())
            .expect("an acknowledged upload names its case");
        acks.lock().unwrap().cases.insert(id);
        // Decide on an earlier case, which the model has usually read by now.
        if i >= 2 {
            let target = id - 2;
            let start = Instant::now();
            loop {
                let Ok(page) = reader.get(&format!("/cases/{target}")) else {
                    return;
                };
                if page.body.contains("id=\"model-decision\"")
                    || start.elapsed() > Duration::from_secs(20)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let reason = format!("round {round} film {i}");
            let Ok(reply) = reader.post_form(
                &format!("/cases/{target}/decisions"),
                &[("reading", "uncertain"), ("reason", &reason)],
            ) else {
                return;
            };
            if reply.status == 303 {
                acks.lock().unwrap().decisions.insert((target, reason));
            }
        }
    }
}

#[test]
fn kill_dash_nine_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("review.sqlite");
    common::add_user(&db_path, "alice", "admin");
    let port = common::free_port();
    let mut all_films = common::films("PNEUMONIA", 45);
    all_films.extend(common::films("NORMAL", 45));
    let acks = Arc::new(Mutex::new(Acknowledged::default()));

    for (round, films) in all_films.chunks(30).enumerate() {
        let server = Server::start(&db_path, port);
        let client = {
            let (base, films, acks) = (server.url.clone(), films.to_vec(), acks.clone());
            std::thread::spawn(move || client_loop(base, films, acks, round))
        };
        // Kill while requests are in flight: after a different number of uploads each round.
        let target = acks.lock().unwrap().cases.len() + 6 + 5 * round;
        let start = Instant::now();
        while acks.lock().unwrap().cases.len() < target && !client.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "uploads stalled"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        server.kill();
        client.join().unwrap();
    }

    // Restart: everything acknowledged is there, whole.
    let server = Server::start(&db_path, port);
    let acks = acks.lock().unwrap();
    assert!(
        acks.cases.len() >= 20 && !acks.decisions.is_empty(),
        "the test barely ran: {} cases, {} decisions",
        acks.cases.len(),
        acks.decisions.len()
    );
    eprintln!(
        "acknowledged before the kills: {} uploads, {} decisions",
        acks.cases.len(),
        acks.decisions.len()
    );
    let db = Db::open(&db_path).unwrap();
    let integrity: String = db
        .read("check", |c| {
            c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        })
        .unwrap();
    assert_eq!(integrity, "ok");
    for id in &acks.cases {
        assert!(
            db.case(*id).unwrap().is_some(),
            "acknowledged case {id} was lost"
        );
    }
    for (case_id, reason) in &acks.decisions {
        let found = db
            .decisions(*case_id)
            .unwrap()
            .iter()
            .any(|d| &d.reason == reason);
        assert!(
            found,
            "acknowledged decision on case {case_id} ({reason}) was lost"
        );
    }
    // No half-written case: every case's film is in the store, whole.
    let store = dir.path().join("review.sqlite.files/films");
    let ids: Vec<i64> = db
        .read("ids", |c| {
            c.prepare("SELECT id FROM cases")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .unwrap();
    for id in &ids {
        let case = db.case(*id).unwrap().unwrap();
        let bytes =
            std::fs::read(store.join(&case.film_sha256)).expect("the case's film is stored");
        assert_eq!(
            xray_infer::hex(&Sha256::digest(&bytes)),
            case.film_sha256,
            "case {id}'s film is whole"
        );
    }
    // Films left queued are read after the restart.
    let start = Instant::now();
    while ids
        .iter()
        .any(|id| db.case(*id).unwrap().unwrap().status == CaseStatus::Queued)
    {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "queued films were not read after the restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // And the worklist shows them all.
    let reader = Reader::sign_in(&server.url, "alice", PASSWORD).unwrap();
    let all = reader.get("/worklist?filter=all").unwrap();
    assert!(
        all.body.contains(&format!("All ({})", ids.len())),
        "worklist count"
    );
}
