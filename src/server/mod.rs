//! The HTTP service: `Application::build` takes settings and a bound listener (tests bind
//! 127.0.0.1:0), `run_until_stopped` serves until SIGTERM/SIGINT, lets in-flight requests finish,
//! then closes the store.

pub mod error;
pub mod ingest;
pub mod metrics;
pub mod routes;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

use self::ingest::{AppState, HookSource};
use self::metrics::Metrics;
use crate::deliver::{self, limiter::RateLimiter, Outbox};
use crate::parse::{Kind, LoadError, Registry};
use crate::settings::{Secret, Settings};
use crate::store::{Store, StoreError};
use crate::trust::Trust;
use crate::verify::{self, BasicAuth, BearerToken, Verifier};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Plugins(#[from] LoadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("ingest token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("hooks.{plugin}: {why}")]
    Hook { plugin: String, why: String },
    #[error("trust: {0}")]
    Trust(String),
    #[error("lunchmoney: {0}")]
    Outbox(String),
    #[error("cannot build an HTTP client: {0}")]
    HttpClient(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    server: Server,
    store: Arc<Store>,
    /// `None` in a dry run (no Lunch Money token).
    outbox: Option<Outbox>,
}

impl Application {
    pub fn build(settings: &Settings, listener: TcpListener) -> Result<Application, StartError> {
        let registry = Arc::new(Registry::load(settings.parsers.dir.as_deref())?);
        if let Some(error) = crate::trust::policy_errors(&settings.trust, &registry)
            .into_iter()
            .next()
        {
            return Err(StartError::Trust(error));
        }
        let store = Arc::new(Store::open(&settings.store.path)?);
        let token = ingest_token(settings)?;
        // One limiter for every request to Lunch Money from this process (outbox, look-ups,
        // /admin/check): the API's limit is per token.
        let limiter = Arc::new(RateLimiter::new(settings.lunchmoney.requests_per_minute));
        let state = web::Data::new(app_state(settings, &registry, &store, &token, &limiter)?);
        let outbox = if settings.dry_run() {
            tracing::info!("dry run: no Lunch Money token is set, so messages are stored and parsed but nothing is posted");
            None
        } else {
            for source in deliver::sources_without_account(&settings.lunchmoney, &registry) {
                tracing::warn!(source, "no Lunch Money account mapped (lunchmoney.sources.{source}.account): its transactions go in as cash, which Lunch Money cannot deduplicate by external_id");
            }
            Some(
                Outbox::new(
                    Arc::clone(&store),
                    &settings.lunchmoney,
                    Arc::clone(&limiter),
                )
                .map_err(|e| StartError::Outbox(e.to_string()))?,
            )
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/inbound/email", web::post().to(routes::email::handle))
                .route("/inbound/mailgun", web::post().to(routes::mailgun::handle))
                // Mailgun posts the raw message (`body-mime`) only to URLs ending in "mime".
                .route(
                    "/inbound/mailgun/mime",
                    web::post().to(routes::mailgun::handle),
                )
                .route(
                    "/inbound/postmark",
                    web::post().to(routes::postmark::handle),
                )
                .route(
                    "/inbound/sendgrid",
                    web::post().to(routes::sendgrid::handle),
                )
                .route("/hooks/{plugin}", web::post().to(routes::hooks::handle))
                .route("/healthz", web::get().to(routes::health::healthz))
                .route("/readyz", web::get().to(routes::health::readyz))
                .route("/metrics", web::get().to(routes::health::metrics))
                .route("/admin/outbox", web::get().to(routes::admin::outbox))
                .route("/admin/check", web::get().to(routes::admin::check))
                .route("/admin/replay", web::post().to(routes::admin::replay))
                .route("/admin/reparse", web::post().to(routes::admin::reparse))
                .default_service(web::to(not_found))
        })
        .shutdown_timeout(settings.server.shutdown_timeout_secs);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartError::Listen {
                addr: settings.server.listen.clone(),
                source,
            })?
            .run();
        Ok(Application {
            port,
            server,
            store,
            outbox,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until stopped by a signal (or the handle), then closes the store, committing anything
    /// still queued.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let worker = self.outbox.map(|outbox| tokio::spawn(outbox.run(stopped)));
        let served = self.server.await;
        // The HTTP side has drained; let the worker finish the insert it may have in flight.
        let _ = stop.send(true);
        if let Some(worker) = worker {
            if let Err(e) = worker.await {
                tracing::error!(error = %e, "the outbox worker failed");
            }
        }
        // actix's worker threads drop their copies of the state (and so the store) shortly after
        // the server future resolves; wait for that, briefly, to close the store cleanly.
        let mut shared = self.store;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let owned = loop {
            match Arc::try_unwrap(shared) {
                Ok(store) => break Some(store),
                Err(still) if tokio::time::Instant::now() < deadline => {
                    shared = still;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(_) => break None,
            }
        };
        match owned {
            Some(store) => {
                if let Err(e) = tokio::task::spawn_blocking(move || store.close())
                    .await
                    .unwrap_or(Ok(()))
                {
                    tracing::error!(error = %e, "closing the store failed");
                }
            }
            // Acknowledged data is committed already, so dropping without the final checkpoint
            // loses nothing.
            None => tracing::warn!("store still in use 5 s after shutdown; dropping it"),
        }
        tracing::info!("stopped");
        served
    }

    /// A handle that can stop the server (tests use it for graceful shutdown).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": "not_found", "reason": "no such route" }))
}

fn app_state(
    settings: &Settings,
    registry: &Arc<Registry>,
    store: &Arc<Store>,
    token: &Secret,
    limiter: &Arc<RateLimiter>,
) -> Result<AppState, StartError> {
    let basic_or_token = |basic: &crate::settings::BasicAuthSettings| -> Box<dyn Verifier> {
        match &basic.username {
            Some(username) if !basic.password.is_empty() => Box::new(BasicAuth {
                username: username.clone(),
                password: basic.password.clone(),
            }),
            _ => Box::new(BearerToken(token.clone())),
        }
    };
    for plugin in settings.hooks.keys() {
        let why = match registry.get(plugin) {
            Some(p) if p.kind() == Kind::Webhook => continue,
            Some(_) => "is an email plugin, not a webhook plugin".to_owned(),
            None => format!(
                "no such plugin; known: {}",
                registry.ids().collect::<Vec<_>>().join(", ")
            ),
        };
        return Err(StartError::Hook {
            plugin: plugin.clone(),
            why,
        });
    }
    let mut hooks = HashMap::new();
    for plugin in registry.ids() {
        let Some(p) = registry.get(plugin).filter(|p| p.kind() == Kind::Webhook) else {
            continue;
        };
        let configured = settings.hooks.get(plugin);
        let declared = p.verify();
        let scheme = configured
            .and_then(|c| c.scheme)
            .or(declared.and_then(|d| d.scheme));
        if scheme == Some(crate::settings::VerifyScheme::None) {
            tracing::warn!(
                plugin,
                "webhook plugin accepts unauthenticated requests (scheme = \"none\")"
            );
        }
        let (verifier, secret_header) = verify::hook_verifier(plugin, declared, configured, token);
        hooks.insert(
            plugin.to_owned(),
            HookSource {
                verifier,
                secret_header,
            },
        );
    }
    Ok(AppState {
        registry: Arc::clone(registry),
        store: Arc::clone(store),
        metrics: Metrics::default(),
        limits: settings.server.limits.clone(),
        bearer: Box::new(BearerToken(token.clone())),
        postmark: basic_or_token(&settings.postmark),
        sendgrid: basic_or_token(&settings.sendgrid),
        mailgun: settings.mailgun.clone(),
        hooks,
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("lm-ingest/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StartError::HttpClient(e.to_string()))?,
        admin: (!settings.admin.token.is_empty())
            .then(|| Box::new(BearerToken(settings.admin.token.clone())) as Box<dyn Verifier>),
        settings: settings.clone(),
        limiter: Arc::clone(limiter),
        trust: Arc::new(Trust::from_settings(&settings.trust).map_err(StartError::Trust)?),
    })
}

/// The configured ingest token, or the one generated on first start and kept (mode 0600) in
/// `ingest-token` beside the store. Its value is never logged; only where it is.
fn ingest_token(settings: &Settings) -> Result<Secret, StartError> {
    if !settings.ingest.token.is_empty() {
        return Ok(settings.ingest.token.clone());
    }
    let folder = settings
        .store
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let path = folder.join("ingest-token");
    let file_error = |source| StartError::TokenFile {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 16 => return Ok(Secret::new(text.trim())),
        Ok(_) => {
            return Err(file_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "shorter than 16 characters; delete it to generate a new one",
            )))
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(file_error(e)),
        Err(_) => {}
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(file_error)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(file_error)?;
    file.write_all(token.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(file_error)?;
    tracing::info!(path = %path.display(), "generated an ingest token (set ingest.token to choose your own)");
    Ok(Secret::new(token))
}

/// Binds the configured address and serves: what `lm-ingest serve` runs.
pub async fn serve(settings: Settings) -> Result<(), StartError> {
    let listener =
        TcpListener::bind(&settings.server.listen).map_err(|source| StartError::Listen {
            addr: settings.server.listen.clone(),
            source,
        })?;
    let app = Application::build(&settings, listener)?;
    tracing::info!(listen = %settings.server.listen, store = %settings.store.path.display(), "serving");
    app.run_until_stopped()
        .await
        .map_err(|source| StartError::Listen {
            addr: settings.server.listen.clone(),
            source,
        })
}
