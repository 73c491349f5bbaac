//! A blocking HTTP client that signs in like a browser: it keeps the session cookie and the
//! session's CSRF token and sends them with every form. Shared by the tests and the load tool.
#![allow(dead_code)]

use std::time::Duration;

/// One signed-in reader.
pub struct Reader {
    agent: ureq::Agent,
    base: String,
    cookie: String,
    /// The session's CSRF token, read from the worklist page.
    pub csrf: String,
}

/// Status, `Location` header and body of a reply.
pub struct Reply {
    pub status: u16,
    pub location: String,
    pub body: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn reply(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, String> {
    let mut response = response.map_err(|e| e.to_string())?;
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| e.to_string())?;
    Ok(Reply {
        status,
        location,
        body,
    })
}

/// The value of `name="csrf"` in a page.
pub fn csrf_in(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(
        page[at..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect(),
    )
}

impl Reader {
    /// Signs in through the login form.
    pub fn sign_in(base: &str, name: &str, password: &str) -> Result<Reader, String> {
        let agent = agent();
        let mut form = agent
            .get(format!("{base}/login"))
            .call()
            .map_err(|e| e.to_string())?;
        let login_cookie = form
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or_default()
            .to_string();
        let page = form
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let token = csrf_in(&page).ok_or("no CSRF token on the login page")?;
        let body = format!(
            "name={}&password={}&csrf={token}",
            url_encode(name),
            url_encode(password)
        );
        let response = agent
            .post(format!("{base}/login"))
            .header("cookie", &login_cookie)
            .content_type("application/x-www-form-urlencoded")
            .send(body.as_bytes());
        let response = response.map_err(|e| e.to_string())?;
        let cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("xr_session="))
            .and_then(|v| v.split(';').next())
            .ok_or_else(|| format!("sign-in refused: {}", response.status()))?
            .to_string();
        let mut reader = Reader {
            agent,
            base: base.to_string(),
            cookie,
            csrf: String::new(),
        };
        let worklist = reader.get("/worklist")?;
        reader.csrf = csrf_in(&worklist.body).ok_or("no CSRF token on the worklist")?;
        Ok(reader)
    }

    /// GET a path.
    pub fn get(&self, path: &str) -> Result<Reply, String> {
        reply(
            self.agent
                .get(format!("{}{path}", self.base))
                .header("cookie", &self.cookie)
                .call(),
        )
    }

    /// POST a form (the CSRF token is added).
    pub fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Result<Reply, String> {
        let mut body = format!("csrf={}", self.csrf);
        for (k, v) in fields {
            body.push_str(&format!("&{k}={}", url_encode(v)));
        }
        reply(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("cookie", &self.cookie)
                .content_type("application/x-www-form-urlencoded")
                .send(body.as_bytes()),
        )
    }

    /// Uploads films in one multipart form.
    pub fn upload(&self, files: &[(&str, &[u8])]) -> Result<Reply, String> {
        let (content_type, body) = multipart(Some(&self.csrf), files);
        reply(
            self.agent
                .post(format!("{}/upload", self.base))
                .header("cookie", &self.cookie)
                .content_type(&content_type)
                .send(&body[..]),
        )
    }
}

/// Percent-encodes a form value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A `multipart/form-data` body: the CSRF field (when given) then each file as `films`.
pub fn multipart(csrf: Option<&str>, files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "xray-review-test-boundary-7c1f";
    let mut body = Vec::new();
    if let Some(token) = csrf {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{token}\r\n"
            )
            .as_bytes(),
        );
    }
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"films\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
