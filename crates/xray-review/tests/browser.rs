//! End to end in headless Chromium (Debian's `chromium` and `chromium-driver`, through
//! WebDriver): sign in, upload a DICOM and a JPEG, see the probability and the overlay, toggle
//! it and switch its method, record a disagreement with a reason, restart the server, and find
//! the decision and its audit entry. Fails on any console error or any image that does not
//! load. Skipped only where chromedriver is missing and `CI` is unset; `.ci/run` installs it.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use common::{Server, PASSWORD};

/// Chromedriver's "get log" command (Chrome's extension to WebDriver): the browser console.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> Option<PathBuf> {
    std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/bin/chromedriver")])
        .find(|p| p.exists())
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Every console entry at warning level or above since the last call, as text.
async fn console_problems(client: &Client) -> Vec<String> {
    let log = client.issue_cmd(BrowserLog).await.expect("browser log");
    log.as_array()
        .into_iter()
        .flatten()
        .filter(|e| matches!(e["level"].as_str(), Some("SEVERE") | Some("WARNING")))
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Fails unless every image on the page has loaded with a size.
async fn assert_images_loaded(client: &Client, page: &str) {
    let broken = client
        .execute(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(broken, json!([]), "images that did not load on {page}");
}

async fn wait_for_images(client: &Client) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let done = client
            .execute(
                "return Array.from(document.images).every(i => i.complete);",
                vec![],
            )
            .await
            .unwrap();
        if done == Value::Bool(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reloads a case page until the model has read the film.
async fn open_read_case(client: &Client, url: &str) {
    let start = Instant::now();
    loop {
        client.goto(url).await.unwrap();
        if client.find(Locator::Id("model-decision")).await.is_ok() {
            wait_for_images(client).await;
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{url} was never read"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_reviews_films_in_chromium_and_the_record_survives_a_restart() {
    let Some(driver_path) = chromedriver() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium-driver"
        );
        eprintln!("skipped: no chromedriver (apt-get install chromium-driver)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("review.sqlite");
    common::add_user(&db, "alice", "admin");
    let port = common::free_port();
    let server = Server::start(&db, port);

    let driver_port = common::free_port();
    let _driver = Driver(
        Command::new(&driver_path)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000",
                     format!("--user-data-dir={}", dir.path().join("profile").display())],
        }),
    );
    capabilities.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
    let mut client = None;
    let start = Instant::now();
    while client.is_none() {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
        {
            Ok(c) => client = Some(c),
            Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("chromedriver: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let client = client.unwrap();
    let base = server.url.clone();
    let mut problems = Vec::new();

    // Sign in.
    client.goto(&format!("{base}/worklist")).await.unwrap();
    assert!(client
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/login"));
    client
        .find(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    client
        .find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    client
        .find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Id("films"))
        .await
        .unwrap();
    problems.extend(console_problems(&client).await);

    // Upload a DICOM and a JPEG at once.
    let jpeg = common::films("NORMAL", 1).remove(0);
    let dicom = common::dicom_film();
    let files = format!(
        "{}\n{}",
        dicom.canonicalize().unwrap().display(),
        jpeg.canonicalize().unwrap().display()
    );
    client
        .find(Locator::Id("films"))
        .await
        .unwrap()
        .send_keys(&files)
        .await
        .unwrap();
    client
        .find(Locator::Id("upload"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let accepted = client
        .wait()
        .for_element(Locator::Id("accepted"))
        .await
        .unwrap();
    let text = accepted.text().await.unwrap();
    assert!(
        text.contains("cxr_pa_monochrome2.dcm")
            && text.contains(jpeg.file_name().unwrap().to_str().unwrap()),
        "{text}"
    );
    // Cases are numbered in upload order: the DICOM is #1, the JPEG #2.
    problems.extend(console_problems(&client).await);

    // The DICOM film: read, referred (an adult film), its header shown, its image loaded.
    open_read_case(&client, &format!("{base}/cases/1")).await;
    let meta = client
        .find(Locator::Css("p.meta"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        meta.contains("view PA") && meta.contains("patient"),
        "{meta}"
    );
    assert_images_loaded(&client, "case 1").await;
    problems.extend(console_problems(&client).await);

    // The JPEG: probability and overlay, toggled and switched to Integrated Gradients.
    open_read_case(&client, &format!("{base}/cases/2")).await;
    let probability = client
        .find(Locator::Id("calibrated"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        probability
            .parse::<f64>()
            .is_ok_and(|p| (0.0..=1.0).contains(&p)),
        "{probability}"
    );
    let model = client
        .find(Locator::Id("model-decision"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        model == "NORMAL" || model == "PNEUMONIA",
        "a training film is called: {model}"
    );
    assert_images_loaded(&client, "case 2").await;
    let screenshot = client.screenshot().await.unwrap();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(shots.join("review_case.png"), &screenshot).unwrap();
    if let Some(path) = std::env::var_os("REVIEW_SCREENSHOT") {
        std::fs::write(path, &screenshot).unwrap();
    }
    let overlay_display = "return getComputedStyle(document.getElementById('overlay')).display;";
    assert_eq!(
        client.execute(overlay_display, vec![]).await.unwrap(),
        json!("block")
    );
    client
        .find(Locator::Id("overlay-toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        client.execute(overlay_display, vec![]).await.unwrap(),
        json!("none")
    );
    client
        .find(Locator::Id("overlay-toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        client.execute(overlay_display, vec![]).await.unwrap(),
        json!("block")
    );
    client
        .find(Locator::Id("overlay-method"))
        .await
        .unwrap()
        .select_by_value("integrated_gradients")
        .await
        .unwrap();
    wait_for_images(&client).await;
    let src = client
        .find(Locator::Id("overlay"))
        .await
        .unwrap()
        .attr("src")
        .await
        .unwrap()
        .unwrap();
    assert!(src.ends_with("/layers/integrated_gradients"), "{src}");
    assert_images_loaded(&client, "case 2 with Integrated Gradients").await;
    client.execute(
        "const w = document.getElementById('window'); w.value = 40; w.dispatchEvent(new Event('input'));",
        vec![],
    )
    .await
    .unwrap();
    let slope = client
        .execute(
            "return document.querySelector('#wl feFuncR').getAttribute('slope');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(slope, json!("2.5"), "window 40% maps to slope 1/0.4");
    problems.extend(console_problems(&client).await);

    // Disagree, with a reason.
    let disagree = if model == "NORMAL" {
        "read-pneumonia"
    } else {
        "read-normal"
    };
    let reason = "retrocardiac opacity on the lateral margin";
    client
        .find(Locator::Id("reason"))
        .await
        .unwrap()
        .send_keys(reason)
        .await
        .unwrap();
    client
        .find(Locator::Id(disagree))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_url(&url::Url::parse(&format!("{base}/cases/1")).unwrap())
        .await
        .unwrap();
    problems.extend(console_problems(&client).await);

    // Restart the server the hard way; the session, the decision and the audit entry remain.
    server.kill();
    let server = Server::start(&db, port);
    client
        .goto(&format!("{}/cases/2", server.url))
        .await
        .unwrap();
    let decisions = client
        .find(Locator::Id("decisions"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        decisions.contains(reason) && decisions.contains("disagrees with the model"),
        "{decisions}"
    );
    client
        .goto(&format!("{}/worklist?filter=disagree", server.url))
        .await
        .unwrap();
    let list = client
        .find(Locator::Css("table.worklist"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains("#2"), "{list}");
    client.goto(&format!("{}/audit", server.url)).await.unwrap();
    let audit = client
        .find(Locator::Id("audit"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("decision") && l.contains("#2") && l.contains(reason)),
        "{audit}"
    );
    problems.extend(console_problems(&client).await);
    client.close().await.unwrap();
    assert!(problems.is_empty(), "console problems: {problems:#?}");
}
