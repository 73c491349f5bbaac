//! The dozen W3C WebDriver commands the browser test uses, as JSON over HTTP to chromedriver.
//!
//! A WebDriver client crate (fantoccini) did the same, but brought some forty crates (two
//! Unicode/ICU stacks through `url`) that added minutes to every CI build; these calls are the
//! protocol's plain JSON, sent with the test's own HTTP client.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session.
pub struct Session {
    agent: ureq::Agent,
    url: String,
}

impl Session {
    /// Opens a session on the chromedriver at `driver` with these capabilities.
    pub fn new(driver: &str, capabilities: Value) -> Result<Session, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let body = json!({ "capabilities": { "alwaysMatch": capabilities } });
        let reply = send(&agent, "POST", &format!("{driver}/session"), Some(body))?;
        let id = reply["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {reply}"))?;
        Ok(Session {
            agent,
            url: format!("{driver}/session/{id}"),
        })
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        send(&self.agent, method, &format!("{}{path}", self.url), body)
    }

    /// Navigates and waits for the page to load.
    pub fn goto(&self, url: &str) -> Result<(), String> {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .map(|_| ())
    }

    /// The page's URL.
    pub fn current_url(&self) -> Result<String, String> {
        Ok(self
            .command("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// The first element matching a CSS selector.
    pub fn find(&self, css: &str) -> Result<String, String> {
        let found = self.command(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        found[ELEMENT]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no element {css}: {found}"))
    }

    /// [`Session::find`], retried until it appears or `timeout` passes.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            match self.find(css) {
                Ok(element) => return Ok(element),
                Err(e) if start.elapsed() > timeout => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Clicks an element.
    pub fn click(&self, element: &str) -> Result<(), String> {
        self.command(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .map(|_| ())
    }

    /// Types into an element (for a file input: paths, one per line).
    pub fn send_keys(&self, element: &str, text: &str) -> Result<(), String> {
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .map(|_| ())
    }

    /// An element's visible text.
    pub fn text(&self, element: &str) -> Result<String, String> {
        Ok(self
            .command("GET", &format!("/element/{element}/text"), None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// An element's attribute.
    pub fn attribute(&self, element: &str, name: &str) -> Result<Option<String>, String> {
        Ok(self
            .command("GET", &format!("/element/{element}/attribute/{name}"), None)?
            .as_str()
            .map(str::to_string))
    }

    /// Runs a script in the page and returns its value.
    pub fn execute(&self, script: &str) -> Result<Value, String> {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// The viewport as PNG.
    pub fn screenshot(&self) -> Result<Vec<u8>, String> {
        let encoded = self.command("GET", "/screenshot", None)?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .map_err(|e| e.to_string())
    }

    /// The browser console entries since the last call (chromedriver's log extension).
    pub fn console(&self) -> Result<Vec<Value>, String> {
        let log = self.command("POST", "/se/log", Some(json!({ "type": "browser" })))?;
        Ok(log.as_array().cloned().unwrap_or_default())
    }

    /// Ends the session and closes the browser.
    pub fn quit(self) -> Result<(), String> {
        self.command("DELETE", "", None).map(|_| ())
    }
}

/// Sends one command and returns its `value`, or the WebDriver error as text.
fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let response = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        (_, body) => agent
            .post(url)
            .content_type("application/json")
            .send(body.unwrap_or(json!({})).to_string().as_bytes()),
    };
    let mut response = response.map_err(|e| format!("{method} {url}: {e}"))?;
    let text = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let reply: Value = serde_json::from_str(&text).map_err(|e| format!("{url}: {e}: {text}"))?;
    if reply["value"]["error"].is_string() {
        return Err(format!("{method} {url}: {}", reply["value"]));
    }
    Ok(reply["value"].clone())
}
