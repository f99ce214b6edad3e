//! The demo's application: small in-process HTTP servers playing Bookinfo's services. Each sits behind its
//! own `meshlens proxy sidecar` (the sidecar forwards inbound requests to the app's address) and makes its
//! outbound calls through that sidecar's outbound listener, as an app with `HTTP_PROXY` set does. They
//! propagate `x-request-id` and `traceparent` as Istio asks applications to.

use super::http::{Body, HttpClient, call, respond};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What a demo service does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The front end: calls details and reviews for a page, ratings for a new rating.
    ProductPage,
    Details,
    /// v1 shows no stars; v2 and v3 fetch them from ratings.
    Reviews {
        with_ratings: bool,
    },
    /// Fails a share of its requests with 503.
    Ratings,
}

impl Role {
    /// The role of a workload from its `app` and `version` labels.
    pub fn from_labels(app: &str, version: Option<&str>) -> Option<Role> {
        match app {
            "productpage" => Some(Role::ProductPage),
            "details" => Some(Role::Details),
            "reviews" => Some(Role::Reviews { with_ratings: version != Some("v1") }),
            "ratings" => Some(Role::Ratings),
            _ => None,
        }
    }
}

/// One running app.
struct App {
    role: Role,
    /// The sidecar's outbound listener: every outbound call goes there.
    outbound: SocketAddr,
    client: HttpClient,
    /// Ratings' failure draw; seeded so that a run can be repeated.
    failures: Mutex<fastrand::Rng>,
    fail_rate: f64,
}

/// The apps of the demo; dropping it stops them.
pub struct Apps {
    tasks: JoinSet<()>,
}

impl Apps {
    pub fn new() -> Apps {
        Apps { tasks: JoinSet::new() }
    }

    /// Starts an app on a free port of 127.0.0.1 and returns that address (the sidecar's `--app`).
    pub async fn start(
        &mut self,
        role: Role,
        outbound: SocketAddr,
        fail_rate: f64,
        seed: u64,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Arc::new(App {
            role,
            outbound,
            client: super::http::client(None),
            failures: Mutex::new(fastrand::Rng::with_seed(seed)),
            fail_rate,
        });
        self.tasks.spawn(serve(listener, app));
        Ok(addr)
    }

    pub fn stop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn serve(listener: TcpListener, app: Arc<App>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let app = Arc::clone(&app);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let app = Arc::clone(&app);
                async move { Ok::<_, Infallible>(app.handle(request).await) }
            });
            // A connection that breaks mid-request is the client's business; the app serves the next one.
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Reap finished connections so the set does not grow for the whole run.
        while connections.try_join_next().is_some() {}
    }
}

/// The product id in `/prefix/ID...`, 0 when absent.
fn id_after<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    let id = rest.split('/').next().unwrap_or_default();
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

/// The `id` query parameter of `/productpage?id=N`, 0 when absent.
fn query_id(query: Option<&str>) -> String {
    query
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("id=")))
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or("0")
        .to_owned()
}

impl App {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        // The request is small; an unreadable body is answered like any bad request.
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return respond(StatusCode::BAD_REQUEST, "unreadable request body\n");
        };
        let trace = Trace::of(&parts.headers);
        let path = parts.uri.path();
        match (self.role, &parts.method) {
            (Role::ProductPage, &Method::GET) if path == "/productpage" => {
                self.product_page(&query_id(parts.uri.query()), &trace).await
            }
            (Role::ProductPage, &Method::GET) if path == "/api/v1/products" => {
                json(StatusCode::OK, r#"[{"id":0,"title":"The Comedy of Errors"}]"#.to_owned())
            }
            (Role::ProductPage, &Method::GET) => match id_after(path, "/api/v1/products/") {
                Some(id) => self.forward(Method::GET, "details:9080", &format!("/details/{id}"), &trace, None).await,
                None => respond(StatusCode::NOT_FOUND, "not found\n"),
            },
            (Role::ProductPage, &Method::POST) => match id_after(path, "/api/v1/products/") {
                Some(id) if path.ends_with("/ratings") => {
                    self.forward(Method::POST, "ratings:9080", &format!("/ratings/{id}"), &trace, Some(body)).await
                }
                _ => respond(StatusCode::NOT_FOUND, "not found\n"),
            },
            (Role::Details, &Method::GET) => match id_after(path, "/details/") {
                Some(id) => json(
                    StatusCode::OK,
                    format!(
                        r#"{{"id":{id},"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English"}}"#
                    ),
                ),
                None => respond(StatusCode::NOT_FOUND, "not found\n"),
            },
            (Role::Reviews { with_ratings }, &Method::GET) => match id_after(path, "/reviews/") {
                Some(id) => self.reviews(id, with_ratings, &trace).await,
                None => respond(StatusCode::NOT_FOUND, "not found\n"),
            },
            (Role::Ratings, &Method::GET | &Method::POST) => match id_after(path, "/ratings/") {
                Some(_) if self.fails() => respond(StatusCode::SERVICE_UNAVAILABLE, "ratings backend unavailable\n"),
                Some(id) if parts.method == Method::POST => {
                    json(StatusCode::CREATED, format!(r#"{{"id":{id},"status":"rating recorded"}}"#))
                }
                Some(id) => json(StatusCode::OK, format!(r#"{{"id":{id},"ratings":{{"Reviewer1":5,"Reviewer2":4}}}}"#)),
                None => respond(StatusCode::NOT_FOUND, "not found\n"),
            },
            _ => respond(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn fails(&self) -> bool {
        let mut rng = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        rng.f64() < self.fail_rate
    }

    /// One outbound call through the sidecar: the status and body, or `None` when it could not be made.
    async fn outbound(
        &self,
        method: Method,
        host: &str,
        path: &str,
        trace: &Trace,
        body: Option<Bytes>,
    ) -> Option<(StatusCode, Bytes)> {
        let mut builder =
            Request::builder().method(method).uri(format!("http://{}{path}", self.outbound)).header("host", host);
        for (name, value) in &trace.headers {
            builder = builder.header(name, value);
        }
        let request = builder.body(Body::new(body.unwrap_or_default())).ok()?;
        call(&self.client, request).await.ok()
    }

    /// Passes the callee's answer on; a failed call is a 502, as Bookinfo's front end reports it. (Not a
    /// 503: the gateway's default retry policy would retry that, and the demo keeps its retries where its
    /// configuration puts them.)
    async fn forward(
        &self,
        method: Method,
        host: &str,
        path: &str,
        trace: &Trace,
        body: Option<Bytes>,
    ) -> Response<Body> {
        match self.outbound(method, host, path, trace, body).await {
            Some((status, body)) if status.is_success() => json(status, String::from_utf8_lossy(&body).into_owned()),
            Some((status, _)) => respond(StatusCode::BAD_GATEWAY, &format!("{host} answered {status}\n")),
            None => respond(StatusCode::BAD_GATEWAY, &format!("{host} unreachable\n")),
        }
    }

    /// Bookinfo's page: details and reviews side by side; a failing part is shown as an error in the page,
    /// which still renders.
    async fn product_page(&self, id: &str, trace: &Trace) -> Response<Body> {
        let details_path = format!("/details/{id}");
        let reviews_path = format!("/reviews/{id}");
        let (details, reviews) = tokio::join!(
            self.outbound(Method::GET, "details:9080", &details_path, trace, None),
            self.outbound(Method::GET, "reviews:9080", &reviews_path, trace, None),
        );
        let part = |answer: Option<(StatusCode, Bytes)>, what: &str| match answer {
            Some((status, body)) if status.is_success() => String::from_utf8_lossy(&body).into_owned(),
            _ => format!("Sorry, product {what} are currently unavailable for this book."),
        };
        let page = format!(
            "<html><body><h1>The Comedy of Errors</h1>\n<pre>{}</pre>\n<pre>{}</pre>\n</body></html>\n",
            part(details, "details"),
            part(reviews, "reviews")
        );
        let mut response = respond(StatusCode::OK, &page);
        response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/html"));
        response
    }

    async fn reviews(&self, id: &str, with_ratings: bool, trace: &Trace) -> Response<Body> {
        let stars = if with_ratings {
            match self.outbound(Method::GET, "ratings:9080", &format!("/ratings/{id}"), trace, None).await {
                Some((status, body)) if status.is_success() => String::from_utf8_lossy(&body).into_owned(),
                _ => r#"{"error":"Ratings service is currently unavailable"}"#.to_owned(),
            }
        } else {
            "null".to_owned()
        };
        json(
            StatusCode::OK,
            format!(
                r#"{{"id":{id},"reviews":[{{"reviewer":"Reviewer1","text":"An extremely entertaining play by Shakespeare."}}],"rating":{stars}}}"#
            ),
        )
    }
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = respond(status, &body);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// The headers an Istio application propagates from its inbound request to its outbound calls.
struct Trace {
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Trace {
    const PROPAGATED: [&str; 2] = ["x-request-id", "traceparent"];

    fn of(headers: &http::HeaderMap) -> Trace {
        let headers = Self::PROPAGATED
            .iter()
            .filter_map(|name| {
                let value = headers.get(*name)?;
                Some((http::HeaderName::from_static(name), value.clone()))
            })
            .collect();
        Trace { headers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_digits_only() {
        assert_eq!(id_after("/details/42", "/details/"), Some("42"));
        assert_eq!(id_after("/api/v1/products/7/ratings", "/api/v1/products/"), Some("7"));
        assert_eq!(id_after("/details/", "/details/"), None);
        assert_eq!(id_after("/details/x1", "/details/"), None);
        assert_eq!(query_id(Some("u=normal&id=3")), "3");
        assert_eq!(query_id(Some("id=../etc")), "0");
        assert_eq!(query_id(None), "0");
    }
}
