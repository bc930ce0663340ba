//! Each play begins afresh in a browser that has played before: no cache entry, cookie or
//! connection of an earlier play reaches it, and every connection it opened is closed when it
//! ends (nginx has then logged every request it made). Chromium plays in a browser context of
//! its own (an incognito profile, made and disposed through its DevTools protocol, whose
//! connections and cache go with it); Firefox
//! clears its HTTP cache and closes its connections after each play (privileged script, through
//! geckodriver's `--allow-system-access`); WebKit can do neither, so its session ends with the
//! play.

use super::{Browser, PageOutcome, PlayOptions};
use crate::browser::Engine;
use crate::error::HarnessError;
use fantoccini::wd::{WebDriverCompatibleCommand, WindowHandle};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Chromium's DevTools protocol, on its browser target (chromedriver's `goog/cdp/execute`
/// speaks to a page's, which may not make browser contexts).
pub(super) struct DevTools {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    last_id: u64,
}

impl DevTools {
    /// Connects to the Chromium whose profile is `user_data_dir`: chromedriver starts it with
    /// `--remote-debugging-port=0`, and it writes its port and path in `DevToolsActivePort`.
    async fn connect(user_data_dir: &Path) -> Result<DevTools, HarnessError> {
        let fail = |e: &dyn std::fmt::Display| HarnessError::Browser {
            what: "connect to chromium's DevTools".into(),
            message: e.to_string(),
        };
        let file = user_data_dir.join("DevToolsActivePort");
        let text = std::fs::read_to_string(&file).map_err(|e| fail(&e))?;
        let mut lines = text.lines();
        let (Some(port), Some(path)) = (lines.next(), lines.next()) else {
            return Err(fail(&format!("{} reads {text:?}", file.display())));
        };
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| fail(&format!("{url}: {e}")))?;
        Ok(DevTools { socket, last_id: 0 })
    }

    /// Sends `method` and returns its result (the events in between are passed over).
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, HarnessError> {
        let fail = |e: &dyn std::fmt::Display| HarnessError::Browser {
            what: format!("send {method} to chromium"),
            message: e.to_string(),
        };
        self.last_id += 1;
        let id = self.last_id;
        let command = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket
            .send(Message::text(command))
            .await
            .map_err(|e| fail(&e))?;
        while let Some(message) = self.socket.next().await {
            let Message::Text(text) = message.map_err(|e| fail(&e))? else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).map_err(|e| fail(&e))?;
            if answer["id"] != id {
                continue;
            }
            return match answer.get("error") {
                Some(error) => Err(fail(error)),
                None => Ok(answer["result"].clone()),
            };
        }
        Err(fail(&"the connection closed"))
    }
}

/// geckodriver's `moz/context`: scripts run in the page (`content`) or the browser (`chrome`).
#[derive(Debug)]
struct MozContext(&'static str);

impl WebDriverCompatibleCommand for MozContext {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/moz/context",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "context": self.0 }).to_string()),
        )
    }
}

/// Firefox, in its privileged context: every HTTP cache entry removed, every connection closed
/// (idle ones too; a load the page left was cancelled with it).
const FIREFOX_FORGET: &str = "Services.cache2.clear();
     Services.obs.notifyObservers(null, 'net:prune-all-connections');";

impl Browser {
    /// Whether it can play again after a play (Chromium, Firefox): WebKit's session ends with
    /// its play.
    pub fn plays_again(&self) -> bool {
        !self.ended
    }

    /// Opens `page_url` and plays afresh (see the module's doc); returns once the play's
    /// connections are closing.
    pub(super) async fn play_afresh(
        &mut self,
        page_url: &str,
        options: &PlayOptions,
    ) -> Result<PageOutcome, HarnessError> {
        match self.engine {
            Engine::Chromium => {
                let context = self.open_context().await?;
                let page = self.play(page_url, options).await;
                self.dispose_context(&context).await?;
                page
            }
            Engine::Firefox => {
                let page = self.play(page_url, options).await;
                self.forget().await?;
                page
            }
            Engine::Webkit => {
                let page = self.play(page_url, options).await;
                self.end_session().await;
                page
            }
        }
    }

    /// Chromium's DevTools on its browser target, connected at first use.
    async fn devtools(&mut self, method: &str, params: Value) -> Result<Value, HarnessError> {
        if self.devtools.is_none() {
            self.devtools = Some(DevTools::connect(self.scratch.path()).await?);
        }
        let devtools = self.devtools.as_mut().expect("just connected");
        devtools.call(method, params).await
    }

    /// A new browser context with one page, made the current window; its id.
    async fn open_context(&mut self) -> Result<String, HarnessError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| HarnessError::Browser {
            what: format!("{what} for a play of its own"),
            message: e.to_string(),
        };
        if self.home.is_none() {
            let home = self
                .client
                .window()
                .await
                .map_err(|e| fail("find the window", &e))?;
            self.home = Some(home);
        }
        let made = self
            .devtools("Target.createBrowserContext", json!({}))
            .await?;
        let context = field(&made, "browserContextId")?;
        let page = self
            .devtools(
                "Target.createTarget",
                json!({ "url": "about:blank", "browserContextId": context }),
            )
            .await?;
        let handle = WindowHandle::try_from(field(&page, "targetId")?)
            .map_err(|e| fail("name the page", &e))?;
        self.client
            .switch_to_window(handle)
            .await
            .map_err(|e| fail("switch to a page", &e))?;
        Ok(context)
    }

    /// Back to the first window; the context's pages, cache and connections go with it.
    async fn dispose_context(&mut self, context: &str) -> Result<(), HarnessError> {
        let home = self
            .home
            .clone()
            .expect("opened with its home window known");
        self.client
            .switch_to_window(home)
            .await
            .map_err(|e| HarnessError::Browser {
                what: "switch back to the first window".into(),
                message: e.to_string(),
            })?;
        self.devtools(
            "Target.disposeBrowserContext",
            json!({ "browserContextId": context }),
        )
        .await
        .map(|_| ())
    }

    /// Firefox: leaves the page, then clears its cache and closes its connections.
    async fn forget(&mut self) -> Result<(), HarnessError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| HarnessError::Browser {
            what: format!("{what} after a play"),
            message: e.to_string(),
        };
        self.client
            .goto("about:blank")
            .await
            .map_err(|e| fail("leave the page", &e))?;
        self.client
            .issue_cmd(MozContext("chrome"))
            .await
            .map_err(|e| fail("enter the browser's context", &e))?;
        let forgot = self.client.execute(FIREFOX_FORGET, vec![]).await;
        self.client
            .issue_cmd(MozContext("content"))
            .await
            .map_err(|e| fail("return to the page's context", &e))?;
        forgot
            .map(|_| ())
            .map_err(|e| fail("clear the cache and close the connections", &e))
    }

    /// Ends the WebDriver session (the browser exits, closing its connections).
    pub(super) async fn end_session(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
        self.ended = true;
    }
}

/// A string field of a DevTools answer.
fn field(answer: &Value, name: &str) -> Result<String, HarnessError> {
    answer[name]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| HarnessError::Browser {
            what: format!("read {name}"),
            message: format!("chromium answered {answer}"),
        })
}
