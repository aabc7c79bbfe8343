//! Who is calling: the client's address and user agent, for rate limits and the audit log.
//! The address comes from the TCP peer unless `http.client_ip_source` names a header set by
//! a proxy we trust; a header a client could forge is never believed otherwise.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::{IpAddr, SocketAddr};

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{FromRequest, HttpRequest, web};

use crate::config::ClientIpSource;
use crate::platform::Platform;

const MAX_USER_AGENT_LEN: usize = 512;

/// The caller's address and user agent.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The client's address according to `source`; `None` only when nothing usable is known.
pub fn client_ip(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    source: ClientIpSource,
) -> Option<IpAddr> {
    let header_ip = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    };
    let from_header = match source {
        ClientIpSource::Socket => None,
        ClientIpSource::XForwardedFor => header_ip("x-forwarded-for"),
        ClientIpSource::FlyClientIp => header_ip("fly-client-ip"),
    };
    from_header.or_else(|| peer.map(|p| p.ip()))
}

impl ClientInfo {
    pub fn of(req: &HttpRequest) -> Self {
        let source = req
            .app_data::<web::Data<Platform>>()
            .map(|p| p.settings.http.client_ip_source)
            .unwrap_or(ClientIpSource::Socket);
        let ip = client_ip(req.headers(), req.peer_addr(), source).map(|ip| ip.to_string());
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT_LEN).collect());
        Self { ip, user_agent }
    }
}

impl FromRequest for ClientInfo {
    type Error = Infallible;
    type Future = Ready<Result<Self, Infallible>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Self::of(req)))
    }
}
