//! End to end in headless Chromium (Debian's `chromium` and `chromium-driver`, through
//! WebDriver): sign in, upload a DICOM and a JPEG, see the probability and the overlay, toggle
//! it and switch its method, record a disagreement with a reason, restart the server, and find
//! the decision and its audit entry. Fails on any console warning or error and on any image
//! that does not load. Skipped only where chromedriver is missing and `CI` is unset; `.ci/run`
//! installs it.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::webdriver::Session;
use common::{Server, PASSWORD};

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

/// Console entries at warning level or above since the last call, as text.
fn console_problems(browser: &Session) -> Vec<String> {
    browser
        .console()
        .expect("browser log")
        .iter()
        .filter(|e| matches!(e["level"].as_str(), Some("SEVERE") | Some("WARNING")))
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn assert_images_loaded(browser: &Session, page: &str) {
    let broken = browser
        .execute(
            "return Array.from(document.images)\
             .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);",
        )
        .unwrap();
    assert_eq!(broken, json!([]), "images that did not load on {page}");
}

fn wait_for_images(browser: &Session) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let done = browser
            .execute("return Array.from(document.images).every(i => i.complete);")
            .unwrap();
        if done == Value::Bool(true) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reloads a case page until the model has read the film.
fn open_read_case(browser: &Session, url: &str) {
    let start = Instant::now();
    loop {
        browser.goto(url).unwrap();
        if browser.find("#model-decision").is_ok() {
            wait_for_images(browser);
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{url} was never read"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn text_of(browser: &Session, css: &str) -> String {
    browser.text(&browser.find(css).unwrap()).unwrap()
}

#[test]
fn a_reader_reviews_films_in_chromium_and_the_record_survives_a_restart() {
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
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000",
                     format!("--user-data-dir={}", dir.path().join("profile").display())],
        },
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    let driver_url = format!("http://127.0.0.1:{driver_port}");
    let start = Instant::now();
    let browser = loop {
        match Session::new(&driver_url, capabilities.clone()) {
            Ok(session) => break session,
            Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("chromedriver: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let base = server.url.clone();
    let mut problems = Vec::new();
    let wait = Duration::from_secs(30);

    // Sign in.
    browser.goto(&format!("{base}/worklist")).unwrap();
    assert!(browser.current_url().unwrap().ends_with("/login"));
    browser
        .send_keys(&browser.find("#name").unwrap(), "alice")
        .unwrap();
    browser
        .send_keys(&browser.find("#password").unwrap(), PASSWORD)
        .unwrap();
    browser.click(&browser.find("#sign-in").unwrap()).unwrap();
    browser.wait_for("#films", wait).unwrap();
    problems.extend(console_problems(&browser));

    // Upload a DICOM and a JPEG at once.
    let jpeg = common::films("NORMAL", 1).remove(0).canonicalize().unwrap();
    let dicom = common::dicom_film().canonicalize().unwrap();
    let files = format!("{}\n{}", dicom.display(), jpeg.display());
    browser
        .send_keys(&browser.find("#films").unwrap(), &files)
        .unwrap();
    browser.click(&browser.find("#upload").unwrap()).unwrap();
    let accepted = browser
        .text(&browser.wait_for("#accepted", wait).unwrap())
        .unwrap();
    let jpeg_name = jpeg.file_name().unwrap().to_str().unwrap();
    assert!(
        accepted.contains("cxr_pa_monochrome2.dcm") && accepted.contains(jpeg_name),
        "{accepted}"
    );
    problems.extend(console_problems(&browser));

    // Cases are numbered in upload order. The DICOM film (#1) is read, referred (an adult
    // film), its header shown and its image loaded.
    open_read_case(&browser, &format!("{base}/cases/1"));
    let meta = text_of(&browser, "p.meta");
    assert!(
        meta.contains("view PA") && meta.contains("patient"),
        "{meta}"
    );
    assert_images_loaded(&browser, "case 1");
    problems.extend(console_problems(&browser));

    // The JPEG (#2): probability and overlay, screenshot, overlay toggled and switched.
    open_read_case(&browser, &format!("{base}/cases/2"));
    let probability = text_of(&browser, "#calibrated");
    assert!(
        probability
            .parse::<f64>()
            .is_ok_and(|p| (0.0..=1.0).contains(&p)),
        "{probability}"
    );
    let model = text_of(&browser, "#model-decision");
    assert!(
        model == "NORMAL" || model == "PNEUMONIA",
        "a training film is called: {model}"
    );
    assert_images_loaded(&browser, "case 2");
    let screenshot = browser.screenshot().unwrap();
    assert!(screenshot.starts_with(b"\x89PNG"));
    std::fs::write(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("review_case.png"),
        &screenshot,
    )
    .unwrap();
    if let Some(path) = std::env::var_os("REVIEW_SCREENSHOT") {
        std::fs::write(path, &screenshot).unwrap();
    }
    let overlay_display = "return getComputedStyle(document.getElementById('overlay')).display;";
    assert_eq!(browser.execute(overlay_display).unwrap(), json!("block"));
    let toggle = browser.find("#overlay-toggle").unwrap();
    browser.click(&toggle).unwrap();
    assert_eq!(browser.execute(overlay_display).unwrap(), json!("none"));
    browser.click(&toggle).unwrap();
    assert_eq!(browser.execute(overlay_display).unwrap(), json!("block"));
    browser
        .click(&browser.find("#overlay-method").unwrap())
        .unwrap();
    browser
        .click(
            &browser
                .find("#overlay-method option[value=integrated_gradients]")
                .unwrap(),
        )
        .unwrap();
    wait_for_images(&browser);
    let src = browser
        .attribute(&browser.find("#overlay").unwrap(), "src")
        .unwrap()
        .unwrap();
    assert!(src.ends_with("/layers/integrated_gradients"), "{src}");
    assert_images_loaded(&browser, "case 2 with Integrated Gradients");
    browser
        .execute("const w = document.getElementById('window'); w.value = 40; w.dispatchEvent(new Event('input'));")
        .unwrap();
    let slope = browser
        .execute("return document.querySelector('#wl feFuncR').getAttribute('slope');")
        .unwrap();
    assert_eq!(slope, json!("2.5"), "a 40% window maps to slope 1/0.4");
    problems.extend(console_problems(&browser));

    // Disagree, with a reason; the next pending case (#1) opens.
    let disagree = if model == "NORMAL" {
        "#read-pneumonia"
    } else {
        "#read-normal"
    };
    let reason = "retrocardiac opacity on the lateral margin";
    browser
        .send_keys(&browser.find("#reason").unwrap(), reason)
        .unwrap();
    browser.click(&browser.find(disagree).unwrap()).unwrap();
    let start = Instant::now();
    while !browser.current_url().unwrap().ends_with("/cases/1") {
        assert!(start.elapsed() < wait, "the next pending case did not open");
        std::thread::sleep(Duration::from_millis(100));
    }
    problems.extend(console_problems(&browser));

    // Restart the server the hard way; the session, the decision and the audit entry remain.
    server.kill();
    let server = Server::start(&db, port);
    browser.goto(&format!("{}/cases/2", server.url)).unwrap();
    let decisions = text_of(&browser, "#decisions");
    assert!(
        decisions.contains(reason) && decisions.contains("disagrees with the model"),
        "{decisions}"
    );
    browser
        .goto(&format!("{}/worklist?filter=disagree", server.url))
        .unwrap();
    let list = text_of(&browser, "table.worklist");
    assert!(list.contains("#2"), "{list}");
    browser.goto(&format!("{}/audit", server.url)).unwrap();
    let audit = text_of(&browser, "#audit");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("decision") && l.contains("#2") && l.contains(reason)),
        "{audit}"
    );
    problems.extend(console_problems(&browser));
    browser.quit().unwrap();
    assert!(problems.is_empty(), "console problems: {problems:#?}");
}
