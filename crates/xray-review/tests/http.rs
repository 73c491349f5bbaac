//! Every route over HTTP (in process, through the real router and a real SQLite file and
//! inference worker): refused logins, missing CSRF tokens, oversized and disguised uploads,
//! path traversal, another reader's entries, and the whole decision flow.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;
use xray_review::model::{CaseStatus, Role};
use xray_review::{auth, AppState, Db, FilmStore, Inference, WebConfig, Worker};

use common::{csrf_in, multipart, PASSWORD};

struct Harness {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    db: Arc<Db>,
    app: Router,
    _worker: Worker,
}

fn harness(max_upload_bytes: usize) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let db = Arc::new(Db::open(&root.join("review.sqlite")).unwrap());
    for (name, role) in [("alice", Role::Admin), ("bob", Role::Reader)] {
        db.add_user(name, &auth::hash_password(name, PASSWORD).unwrap(), role)
            .unwrap();
    }
    let store = FilmStore::open(&root.join("files")).unwrap();
    let inference = Arc::new(Inference::load(&common::bundle()).unwrap());
    let worker = Worker::spawn(db.clone(), store.clone(), inference);
    let config = WebConfig {
        max_upload_bytes,
        secure_cookies: false,
    };
    let app = xray_review::router(AppState::new(db.clone(), store, worker.waker(), config));
    Harness {
        _dir: dir,
        root,
        db,
        app,
        _worker: worker,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(app: &Router, path: &str, cookie: Option<&str>) -> Reply {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    send(app, request.body(Body::empty()).unwrap()).await
}

async fn post_form(app: &Router, path: &str, cookie: Option<&str>, form: &str) -> Reply {
    let mut request =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    send(app, request.body(Body::from(form.to_string())).unwrap()).await
}

async fn upload(app: &Router, cookie: &str, csrf: Option<&str>, files: &[(&str, &[u8])]) -> Reply {
    let (content_type, body) = multipart(csrf, files);
    let request = Request::post("/upload")
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap();
    send(app, request).await
}

/// Signs in through the form; returns the session cookie and the session's CSRF token.
async fn sign_in(app: &Router, name: &str) -> (String, String) {
    let form = get(app, "/login", None).await;
    let token = csrf_in(&form.body).unwrap();
    let reply = post_form(
        app,
        "/login",
        Some(&format!("xr_login={token}")),
        &format!("name={name}&password=correct+horse+battery&csrf={token}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let cookie = reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("xr_session="))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = get(app, "/worklist", Some(&cookie)).await;
    (cookie, csrf_in(&page.body).unwrap())
}

fn wait_until_read(db: &Db, id: i64) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if db.case(id).unwrap().unwrap().status != CaseStatus::Queued {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("case {id} was never read");
}

fn count(db: &Db, sql: &str) -> i64 {
    db.read("count", |c| c.query_row(sql, [], |r| r.get(0)))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_health_login_and_static_files_are_open() {
    let h = harness(1 << 20);
    assert_eq!(get(&h.app, "/health", None).await.body, "ok");
    assert_eq!(get(&h.app, "/login", None).await.status, StatusCode::OK);
    assert_eq!(
        get(&h.app, "/static/app.js", None).await.status,
        StatusCode::OK
    );
    for path in [
        "/",
        "/worklist",
        "/cases/next",
        "/cases/1",
        "/cases/1/film.png",
        "/cases/1/layers/gradcam",
        "/agreement",
        "/audit",
        "/export/decisions.csv",
    ] {
        for cookie in [None, Some("xr_session=forged0123")] {
            let reply = get(&h.app, path, cookie).await;
            let open = path == "/" && reply.location() == "/worklist";
            assert!(
                open || (reply.status == StatusCode::SEE_OTHER && reply.location() == "/login"),
                "GET {path} with {cookie:?}: {} {}",
                reply.status,
                reply.location()
            );
        }
    }
    for path in ["/upload", "/cases/1/decisions", "/logout"] {
        let reply = post_form(&h.app, path, None, "csrf=x").await;
        assert_eq!(
            (reply.status, reply.location()),
            (StatusCode::SEE_OTHER, "/login"),
            "POST {path}"
        );
    }
    let page = get(&h.app, "/login", None).await;
    let csp = page.headers.get(header::CONTENT_SECURITY_POLICY).unwrap();
    assert!(csp.to_str().unwrap().contains("script-src 'self'"));
    assert_eq!(page.headers.get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_are_refused_without_the_right_password_or_form_token() {
    let h = harness(1 << 20);
    let form = get(&h.app, "/login", None).await;
    let token = csrf_in(&form.body).unwrap();
    let cookie = format!("xr_login={token}");
    for (name, password) in [
        ("alice", "wrong+password+here"),
        ("mallory", "correct+horse+battery"),
    ] {
        let reply = post_form(
            &h.app,
            "/login",
            Some(&cookie),
            &format!("name={name}&password={password}&csrf={token}"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{name}");
        assert!(reply.body.contains("Wrong user name or password"));
        assert!(reply
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("xr_session")));
    }
    // Right password, but no form token, or one that is not the cookie's.
    for (cookie, field) in [
        (None, String::new()),
        (Some(cookie.as_str()), "&csrf=0000".to_string()),
    ] {
        let reply = post_form(
            &h.app,
            "/login",
            cookie,
            &format!("name=alice&password=correct+horse+battery{field}"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        count(
            &h.db,
            "SELECT COUNT(*) FROM audit WHERE action = 'login_refused'"
        ),
        2
    );
    assert_eq!(count(&h.db, "SELECT COUNT(*) FROM sessions"), 0);
    let (session, _) = sign_in(&h.app, "alice").await;
    assert_eq!(
        get(&h.app, "/worklist", Some(&session)).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forms_without_the_session_token_change_nothing() {
    let h = harness(1 << 20);
    let (session, csrf) = sign_in(&h.app, "alice").await;
    let jpeg = std::fs::read(&common::films("NORMAL", 1)[0]).unwrap();
    for token in [None, Some("0".repeat(64))] {
        let reply = upload(&h.app, &session, token.as_deref(), &[("a.jpeg", &jpeg)]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(count(&h.db, "SELECT COUNT(*) FROM cases"), 0);
    let reply = upload(&h.app, &session, Some(&csrf), &[("a.jpeg", &jpeg)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    wait_until_read(&h.db, 1);
    for form in ["reading=agree", "reading=agree&csrf=beef"] {
        let reply = post_form(&h.app, "/cases/1/decisions", Some(&session), form).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        post_form(&h.app, "/logout", Some(&session), "")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(count(&h.db, "SELECT COUNT(*) FROM decisions"), 0);
    assert_eq!(
        get(&h.app, "/worklist", Some(&session)).await.status,
        StatusCode::OK
    );
    let out = post_form(&h.app, "/logout", Some(&session), &format!("csrf={csrf}")).await;
    assert_eq!(
        (out.status, out.location()),
        (StatusCode::SEE_OTHER, "/login")
    );
    assert_eq!(
        get(&h.app, "/worklist", Some(&session)).await.location(),
        "/login"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_disguised_and_traversing_uploads_are_refused_or_defused() {
    let h = harness(1 << 20);
    let (session, csrf) = sign_in(&h.app, "alice").await;
    let big = vec![0u8; 2 << 20];
    let reply = upload(&h.app, &session, Some(&csrf), &[("big.png", &big)]).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    let html = b"<html><script>alert(1)</script></html>".to_vec();
    let truncated = std::fs::read(&common::films("NORMAL", 1)[0]).unwrap()[..2000].to_vec();
    let reply = upload(
        &h.app,
        &session,
        Some(&csrf),
        &[
            ("film.png", &html),
            ("cut.jpeg", &truncated),
            ("film.dcm", b"DICM but not really"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reply.body.contains("its content was checked, not its name"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("cut.jpeg: cannot be read as a film"),
        "{}",
        reply.body
    );
    assert!(
        !reply.body.contains("<script>alert"),
        "names and messages are escaped"
    );
    assert_eq!(count(&h.db, "SELECT COUNT(*) FROM cases"), 0);
    assert_eq!(
        count(
            &h.db,
            "SELECT COUNT(*) FROM audit WHERE action = 'upload_refused'"
        ),
        3
    );

    // A real film whose name tries to climb out of the store.
    let escape = h.root.join("escaped.jpeg");
    let name = format!("../../../../..{}", escape.display());
    let jpeg = std::fs::read(&common::films("NORMAL", 1)[0]).unwrap();
    let reply = upload(&h.app, &session, Some(&csrf), &[(&name, &jpeg)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!escape.exists());
    let case = h.db.case(1).unwrap().unwrap();
    assert_eq!(case.original_name, "escaped.jpeg");
    let stored: Vec<String> = std::fs::read_dir(h.root.join("files/films"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(stored, vec![case.film_sha256.clone()]);
    // The same content again is the same case.
    let again = upload(&h.app, &session, Some(&csrf), &[("copy.jpeg", &jpeg)]).await;
    assert!(again.body.contains("already on the worklist"));

    wait_until_read(&h.db, 1);
    for path in [
        "/cases/1/layers/..%2F..%2F..%2Fetc%2Fpasswd",
        "/cases/1/layers/film",
        "/static/..%2F..%2FCargo.toml",
        "/cases/1/../../Cargo.toml",
        "/cases/999/film.png",
    ] {
        let reply = get(&h.app, path, Some(&session)).await;
        assert!(
            reply.status == StatusCode::NOT_FOUND || reply.status == StatusCode::BAD_REQUEST,
            "{path}: {}",
            reply.status
        );
    }
    assert_eq!(
        get(&h.app, "/cases/abc", Some(&session)).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readers_decide_append_only_and_only_amend_their_own_entries() {
    let h = harness(16 << 20);
    let (alice, alice_csrf) = sign_in(&h.app, "alice").await;
    let (bob, bob_csrf) = sign_in(&h.app, "bob").await;
    let normal = std::fs::read(&common::films("NORMAL", 1)[0]).unwrap();
    let pneumonia = std::fs::read(&common::films("PNEUMONIA", 1)[0]).unwrap();
    let dicom = std::fs::read(common::dicom_film()).unwrap();
    let reply = upload(
        &h.app,
        &alice,
        Some(&alice_csrf),
        &[
            ("normal.jpeg", &normal),
            ("pneumonia.jpeg", &pneumonia),
            ("adult.dcm", &dicom),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    for id in 1..=3 {
        wait_until_read(&h.db, id);
    }
    let adult = h.db.case(3).unwrap().unwrap();
    assert_eq!(
        adult.model_decision.as_deref(),
        Some("refer"),
        "the adult DICOM film is referred"
    );
    assert_eq!(adult.view.as_deref(), Some("PA"));
    assert!(adult.patient_id.is_some() && adult.study_date.is_some());

    // The worklist puts the referred film first.
    let list = get(&h.app, "/worklist?filter=all", Some(&alice)).await;
    let first = list.body.find("/cases/3\"").unwrap();
    assert!(
        list.body.find("/cases/1\"").unwrap() > first
            && list.body.find("/cases/2\"").unwrap() > first
    );
    assert_eq!(
        get(&h.app, "/worklist?filter=nonsense", Some(&alice))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // The case page shows the model's output, the overlay of a called film, the disclaimer.
    let called = h.db.case(1).unwrap().unwrap();
    let page = get(&h.app, "/cases/1", Some(&bob)).await;
    assert!(page
        .body
        .contains(&format!("{:.3}", called.calibrated.unwrap())));
    assert!(page.body.contains("/cases/1/layers/gradcam"));
    assert!(page
        .body
        .contains(xray_infer::DISCLAIMER.split('.').next().unwrap()));
    for path in [
        "/cases/1/film.png",
        "/cases/1/layers/gradcam",
        "/cases/1/layers/integrated_gradients",
    ] {
        let image = get(&h.app, path, Some(&bob)).await;
        assert_eq!(image.status, StatusCode::OK, "{path}");
        assert_eq!(
            image.headers.get(header::CONTENT_TYPE).unwrap(),
            "image/png"
        );
    }
    assert_eq!(
        get(&h.app, "/cases/3/layers/gradcam", Some(&bob))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Agreeing needs no reason and moves on; disagreeing and "uncertain" need one.
    let agree = post_form(
        &h.app,
        "/cases/1/decisions",
        Some(&alice),
        &format!("csrf={alice_csrf}&reading=agree"),
    )
    .await;
    assert_eq!(
        (agree.status, agree.location()),
        (StatusCode::SEE_OTHER, "/cases/next?after=1")
    );
    let other = if called.model_decision.as_deref() == Some("normal") {
        "pneumonia"
    } else {
        "normal"
    };
    let bare = post_form(
        &h.app,
        "/cases/1/decisions",
        Some(&bob),
        &format!("csrf={bob_csrf}&reading={other}"),
    )
    .await;
    assert_eq!(bare.status, StatusCode::BAD_REQUEST);
    let refer_agree = post_form(
        &h.app,
        "/cases/3/decisions",
        Some(&bob),
        &format!("csrf={bob_csrf}&reading=agree"),
    )
    .await;
    assert_eq!(
        refer_agree.status,
        StatusCode::BAD_REQUEST,
        "nothing to agree with on a referred film"
    );
    let disagree = post_form(
        &h.app,
        "/cases/1/decisions",
        Some(&bob),
        &format!("csrf={bob_csrf}&reading={other}&reason=%3Dcmd%7C+consolidation+right+lower+lobe"),
    )
    .await;
    assert_eq!(disagree.status, StatusCode::SEE_OTHER);

    // Bob may not amend Alice's entry (1); Alice may amend her own.
    let theft = post_form(
        &h.app,
        "/cases/1/decisions",
        Some(&bob),
        &format!("csrf={bob_csrf}&reading=uncertain&reason=mine&amends=1"),
    )
    .await;
    assert_eq!(theft.status, StatusCode::FORBIDDEN);
    let amend = post_form(
        &h.app,
        "/cases/1/decisions",
        Some(&alice),
        &format!("csrf={alice_csrf}&reading=uncertain&reason=second+look&amends=1"),
    )
    .await;
    assert_eq!(amend.status, StatusCode::SEE_OTHER);
    let decisions = h.db.decisions(1).unwrap();
    assert_eq!(decisions.len(), 3, "nothing was overwritten");
    assert_eq!(decisions[0].reader, "alice");
    assert_eq!(decisions[0].agrees, Some(true));
    assert_eq!(decisions[0].model_probability, called.probability);
    assert_eq!(decisions[0].bundle_sha256, called.bundle_sha256);
    assert_eq!(decisions[1].agrees, Some(false));
    assert_eq!(decisions[2].amends, Some(1));
    // Not even the database lets an entry change or vanish.
    for sql in [
        "UPDATE decisions SET reading = 'normal' WHERE id = 1",
        "DELETE FROM decisions",
        "UPDATE audit SET detail = ''",
        "DELETE FROM audit",
    ] {
        let result = h.db.write("tamper", |tx| tx.execute(sql, []));
        assert!(result.is_err(), "{sql} went through");
    }

    // Filters, the next pending case, agreement, export, audit.
    let pending = get(&h.app, "/worklist?filter=pending", Some(&bob)).await;
    assert!(!pending.body.contains("/cases/1\"") && pending.body.contains("/cases/2\""));
    let next = get(&h.app, "/cases/next?after=1", Some(&bob)).await;
    assert!(next.location() == "/cases/3" || next.location() == "/cases/2");
    let agreement = get(&h.app, "/agreement", Some(&bob)).await;
    assert!(agreement.body.contains("Cohen's kappa"));
    assert!(
        agreement.body.contains("(1 of 3 films read)"),
        "{}",
        agreement.body
    );
    let csv = get(&h.app, "/export/decisions.csv", Some(&bob)).await;
    assert_eq!(csv.body.lines().count(), 4, "{}", csv.body);
    assert!(
        csv.body.contains("'=cmd|"),
        "formulas are defused: {}",
        csv.body
    );
    assert_eq!(
        get(&h.app, "/audit", Some(&bob)).await.status,
        StatusCode::FORBIDDEN
    );
    let audit = get(&h.app, "/audit", Some(&alice)).await;
    assert_eq!(audit.status, StatusCode::OK);
    for action in ["login", "upload", "view", "decision", "export"] {
        assert!(
            audit.body.contains(&format!("<td>{action}</td>")),
            "no {action} in the audit log"
        );
    }
}

#[test]
fn films_left_queued_by_a_stopped_server_are_read_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("review.sqlite")).unwrap());
    let store = FilmStore::open(&dir.path().join("files")).unwrap();
    let jpeg = std::fs::read(&common::films("PNEUMONIA", 1)[0]).unwrap();
    let id = xray_review::ingest::ingest(&db, &store, "a.jpeg", &jpeg, None, "import")
        .unwrap()
        .case_id();
    // No worker ran: the case waits, and no decision can be made on it yet.
    let reader = xray_review::model::User {
        id: 1,
        name: "x".into(),
        role: Role::Reader,
    };
    let new = xray_review::model::NewDecision {
        case_id: id,
        reading: xray_review::model::Reading::Normal,
        reason: String::new(),
        amends: None,
    };
    assert!(matches!(
        db.add_decision(&new, &reader),
        Err(xray_review::db::DecisionRefused::NotYetPredicted)
    ));
    drop(db);
    let db = Arc::new(Db::open(&dir.path().join("review.sqlite")).unwrap());
    let inference = Arc::new(Inference::load(&common::bundle()).unwrap());
    let _worker = Worker::spawn(db.clone(), store, inference);
    wait_until_read(&db, id);
    assert_eq!(db.case(id).unwrap().unwrap().status, CaseStatus::Done);
}
