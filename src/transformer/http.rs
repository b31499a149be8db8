//! Outbound HTTP policy for plugins: which origins they may call, how many
//! requests per turn, how large and how slow a response may be.

use std::future::Future;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

/// One allowed origin, normalised: lower-case scheme and host, explicit port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing `/` is tolerated).
    pub fn parse(entry: &str) -> Result<Origin, String> {
        let uri: http::Uri = entry
            .trim()
            .parse()
            .map_err(|e| format!("`{entry}` is not a URL: {e}"))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| format!("`{entry}` has no scheme (use https://host:port)"))?;
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{entry}` has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("`{entry}` must not contain user information"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("`{entry}` must be an origin without a path"));
        }
        Origin::from_parts(scheme, authority.host(), authority.port_u16())
            .ok_or_else(|| format!("`{entry}` must use http or https"))
    }

    /// The origin a request goes to, or `None` for schemes other than
    /// http(s) or a missing host.
    fn of_request(uri: &http::Uri) -> Option<Origin> {
        Origin::from_parts(uri.scheme_str()?, uri.host()?, uri.port_u16())
    }

    fn from_parts(scheme: &str, host: &str, port: Option<u16>) -> Option<Origin> {
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Origin {
            scheme,
            host,
            port: port.unwrap_or(default_port),
        })
    }
}

/// The origins of an endpoint's `allowed_hosts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    origins: Vec<Origin>,
}

impl AllowList {
    /// Parses all entries; the first invalid one is an error.
    pub fn parse(entries: &[String]) -> Result<AllowList, String> {
        let origins = entries
            .iter()
            .map(|entry| Origin::parse(entry))
            .collect::<Result<_, _>>()?;
        Ok(AllowList { origins })
    }

    /// Parses the valid entries and skips the others: used at run time,
    /// where configuration errors were reported when the config was loaded
    /// and denying is the safe default.
    pub fn parse_lenient(entries: &[String]) -> AllowList {
        let origins = entries
            .iter()
            .filter_map(|entry| Origin::parse(entry).ok())
            .collect();
        AllowList { origins }
    }

    pub fn allows(&self, uri: &http::Uri) -> bool {
        Origin::of_request(uri).is_some_and(|origin| self.origins.contains(&origin))
    }
}

/// Per-turn HTTP policy, plugged into wasmtime-wasi-http.
pub struct HttpPolicy {
    allowed: std::sync::Arc<AllowList>,
    max_requests: u32,
    max_response_bytes: usize,
    request_timeout: Duration,
    /// Requests handed to the network.
    pub sent: u32,
    /// Requests refused by the policy.
    pub denied: u32,
}

/// Why a request was refused, for the plugin's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    HostNotAllowed,
    TooManyRequests,
}

impl HttpPolicy {
    pub fn new(
        allowed: std::sync::Arc<AllowList>,
        max_requests: u32,
        max_response_bytes: usize,
        request_timeout: Duration,
    ) -> Self {
        HttpPolicy {
            allowed,
            max_requests,
            max_response_bytes,
            request_timeout,
            sent: 0,
            denied: 0,
        }
    }

    /// Decides about one request and counts it.
    pub fn admit(&mut self, uri: &http::Uri) -> Result<(), Denial> {
        let verdict = if !self.allowed.allows(uri) {
            Err(Denial::HostNotAllowed)
        } else if self.sent >= self.max_requests {
            Err(Denial::TooManyRequests)
        } else {
            Ok(())
        };
        match verdict {
            Ok(()) => self.sent += 1,
            Err(_) => self.denied += 1,
        }
        verdict
    }

    /// The guest's timeouts, capped by ours.
    fn capped_options(&self, options: Option<RequestOptions>) -> RequestOptions {
        let cap = |guest: Option<Duration>| {
            Some(guest.map_or(self.request_timeout, |g| g.min(self.request_timeout)))
        };
        let options = options.unwrap_or_default();
        RequestOptions {
            connect_timeout: cap(options.connect_timeout),
            first_byte_timeout: cap(options.first_byte_timeout),
            between_bytes_timeout: cap(options.between_bytes_timeout),
        }
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> ResponseFuture {
        let verdict = self.admit(request.uri());
        let options = self.capped_options(options);
        let overall = self.request_timeout;
        let max_body = self.max_response_bytes;
        Box::new(async move {
            // The body is read to its end before anything is decided: a guest still writing the body of a
            // request the host already refused traps (componentize-js does), instead of seeing the error.
            let request = tokio::time::timeout(overall, buffer_request(request))
                .await
                .map_err(|_| wasmtime_wasi_http::Error::HttpRequestDenied)??;
            if let Err(denial) = verdict {
                // Host only: a query string may carry the plugin's own credentials.
                let host = request.uri().host().unwrap_or("").to_string();
                tracing::debug!(?denial, %host, "plugin HTTP request denied");
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            let sending = wasmtime_wasi_http::default_send_request(request, Some(options));
            let (response, io) = tokio::time::timeout(overall, sending)
                .await
                .map_err(|_| wasmtime_wasi_http::Error::HttpResponseTimeout)??;
            check_declared_length(&response, max_body)?;
            let response = response.map(|body| limit_body(body.boxed_unsync(), max_body));
            Ok((
                response,
                Box::new(io) as Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            ))
        })
    }
}

/// Largest request body a plugin may send.
const MAX_REQUEST_BODY: usize = 1024 * 1024;

async fn buffer_request(
    request: http::Request<WasiBody>,
) -> wasmtime_wasi_http::Result<http::Request<WasiBody>> {
    let (parts, body) = request.into_parts();
    let bytes = Limited::new(body, MAX_REQUEST_BODY)
        .collect()
        .await
        .map_err(|_| wasmtime_wasi_http::Error::HttpRequestBodySize(Some(MAX_REQUEST_BODY as u64)))?
        .to_bytes();
    let body = http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok(http::Request::from_parts(parts, body))
}

/// Refuses a response whose `Content-Length` already exceeds the limit.
fn check_declared_length<B>(
    response: &http::Response<B>,
    max_body: usize,
) -> wasmtime_wasi_http::Result<()> {
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > max_body as u64 => Err(
            wasmtime_wasi_http::Error::HttpResponseBodySize(Some(length)),
        ),
        _ => Ok(()),
    }
}

/// Cuts the body off with `HttpResponseBodySize` once it exceeds the limit.
fn limit_body(body: WasiBody, max_body: usize) -> WasiBody {
    Limited::new(body, max_body)
        .map_err(
            move |error| match error.downcast::<wasmtime_wasi_http::Error>() {
                Ok(inner) => *inner,
                Err(_) => wasmtime_wasi_http::Error::HttpResponseBodySize(Some(max_body as u64)),
            },
        )
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(text: &str) -> http::Uri {
        text.parse().unwrap()
    }

    fn policy(entries: &[&str], max_requests: u32) -> HttpPolicy {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        HttpPolicy::new(
            std::sync::Arc::new(AllowList::parse(&entries).unwrap()),
            max_requests,
            1024,
            Duration::from_secs(1),
        )
    }

    #[test]
    fn normalises_host_scheme_and_default_ports() {
        let list = AllowList::parse(&["HTTPS://API.Example.com.".to_string()]).unwrap();
        assert!(list.allows(&uri("https://api.example.com/v1?x=1")));
        assert!(list.allows(&uri("https://api.EXAMPLE.com:443/")));
        assert!(!list.allows(&uri("http://api.example.com/")));
        assert!(!list.allows(&uri("https://api.example.com:8443/")));
        assert!(!list.allows(&uri("https://example.com/")));
        assert!(!list.allows(&uri("https://api.example.com.evil.io/")));
    }

    #[test]
    fn localhost_is_not_an_ip_address() {
        let list = AllowList::parse(&["http://127.0.0.1:8080".to_string()]).unwrap();
        assert!(list.allows(&uri("http://127.0.0.1:8080/x")));
        assert!(!list.allows(&uri("http://localhost:8080/x")));
        let v6 = AllowList::parse(&["http://[::1]:81".to_string()]).unwrap();
        assert!(v6.allows(&uri("http://[::1]:81/")));
    }

    #[test]
    fn rejects_bad_entries() {
        for entry in [
            "api.example.com",
            "ftp://x.org",
            "https://x.org/path",
            "https://u:p@x.org",
            "",
        ] {
            assert!(
                AllowList::parse(&[entry.to_string()]).is_err(),
                "accepted {entry:?}"
            );
        }
        let lenient = AllowList::parse_lenient(&["nope".into(), "https://ok.org".into()]);
        assert!(lenient.allows(&uri("https://ok.org/")));
    }

    #[test]
    fn empty_list_denies_everything() {
        let mut policy = policy(&[], 3);
        assert_eq!(
            policy.admit(&uri("https://api.example.com/")),
            Err(Denial::HostNotAllowed)
        );
        assert_eq!((policy.sent, policy.denied), (0, 1));
    }

    #[test]
    fn counts_and_caps_requests() {
        let mut policy = policy(&["https://a.org"], 2);
        let target = uri("https://a.org/");
        assert_eq!(policy.admit(&target), Ok(()));
        assert_eq!(policy.admit(&target), Ok(()));
        assert_eq!(policy.admit(&target), Err(Denial::TooManyRequests));
        assert_eq!((policy.sent, policy.denied), (2, 1));
    }

    #[test]
    fn caps_guest_timeouts() {
        let policy = policy(&[], 1);
        let options = policy.capped_options(Some(RequestOptions {
            connect_timeout: Some(Duration::from_secs(60)),
            first_byte_timeout: Some(Duration::from_millis(10)),
            between_bytes_timeout: None,
        }));
        assert_eq!(options.connect_timeout, Some(Duration::from_secs(1)));
        assert_eq!(options.first_byte_timeout, Some(Duration::from_millis(10)));
        assert_eq!(options.between_bytes_timeout, Some(Duration::from_secs(1)));
    }
}
