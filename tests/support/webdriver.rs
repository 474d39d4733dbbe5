//! A headless browser for the dashboard test: Debian's Chromium driven by its chromedriver
//! over WebDriver (plain HTTP and JSON).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// A Chromium session; closed, with its chromedriver, on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a window of `width × height`, or
    /// says why they cannot start.
    pub async fn start(width: u32, height: u32) -> Result<Self, String> {
        let port = super::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("chromedriver: {e} (apt-get install chromium-driver)"))?;
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while browser.call(Method::GET, "/status", None).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err("chromedriver did not answer within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let session = browser
            .call(Method::POST, "/session", Some(capabilities))
            .await?;
        browser.session = session["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {session}"))?
            .to_owned();
        Ok(browser)
    }

    /// `method path` on chromedriver: the `value` of its answer, or its error.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.port))
            .header("content-type", "application/json")
            .body(Full::from(
                body.map_or(String::new(), |body| body.to_string()),
            ))
            .unwrap();
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let answer: Value = serde_json::from_slice(&bytes.to_bytes()).map_err(|e| e.to_string())?;
        match status.is_success() {
            true => Ok(answer["value"].clone()),
            false => Err(format!("{status}: {}", answer["value"])),
        }
    }

    /// A command of this session.
    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body) in the page; what it returns.
    pub async fn run(&self, script: &str) -> Value {
        let body = json!({"script": script, "args": []});
        self.command(Method::POST, "/execute/sync", Some(body))
            .await
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        let find = json!({"using": "css selector", "value": css});
        let element = self.command(Method::POST, "/element", Some(find)).await;
        let id = element
            .as_object()
            .and_then(|element| element.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {element}"))
            .to_owned();
        self.command(
            Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// The window as a PNG.
    pub async fn screenshot(&self) -> Vec<u8> {
        let png = self.command(Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("a PNG in base64")
    }
}

impl Drop for Browser {
    /// Ends the session (which closes Chromium), then chromedriver.
    fn drop(&mut self) {
        if !self.session.is_empty() {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let request = format!(
                    "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                    self.session
                );
                let _ = stream.write_all(request.as_bytes());
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
