//! The route table: every API route is registered through [`Routes`], which mounts it on
//! actix and writes `(method, path)` down. The table is what the OpenAPI test compares with
//! the published document (an undocumented route fails it) and what the attack suite walks
//! (a new route is attacked without anyone listing it).
//!
//! Each path is one `web::resource` carrying all its methods, so a wrong method answers 405
//! (two resources on one path would make the second unreachable).

use actix_web::http::Method;
use actix_web::{FromRequest, Handler, Responder, web};

/// One registered route, as the client calls it (`/api/v1/…`, actix's `{param}` syntax,
/// which is also OpenAPI's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub method: Method,
    pub path: String,
}

/// Registers routes on a `ServiceConfig` under `prefix` (the path of the enclosing scope),
/// recording each in `table`.
pub struct Routes<'a> {
    cfg: &'a mut web::ServiceConfig,
    prefix: &'static str,
    table: &'a mut Vec<RouteEntry>,
}

impl<'a> Routes<'a> {
    pub fn new(
        cfg: &'a mut web::ServiceConfig,
        prefix: &'static str,
        table: &'a mut Vec<RouteEntry>,
    ) -> Self {
        Self { cfg, prefix, table }
    }

    /// The underlying configuration, for `app_data`.
    pub fn config(&mut self) -> &mut web::ServiceConfig {
        self.cfg
    }

    /// Mounts the methods `build` adds at `path`.
    pub fn resource(&mut self, path: &str, build: impl FnOnce(Resource) -> Resource) -> &mut Self {
        let built = build(Resource {
            inner: web::resource(path),
            methods: Vec::new(),
        });
        for method in built.methods {
            self.table.push(RouteEntry {
                method,
                path: format!("{}{path}", self.prefix),
            });
        }
        self.cfg.service(built.inner);
        self
    }
}

/// One path's methods, as [`Routes::resource`] builds them.
pub struct Resource {
    inner: actix_web::Resource,
    methods: Vec<Method>,
}

macro_rules! method {
    ($name:ident, $method:ident) => {
        pub fn $name<F, Args>(self, handler: F) -> Self
        where
            F: Handler<Args>,
            Args: FromRequest + 'static,
            F::Output: Responder + 'static,
        {
            self.route(Method::$method, handler)
        }
    };
}

impl Resource {
    method!(get, GET);
    method!(head, HEAD);
    method!(post, POST);
    method!(put, PUT);
    method!(patch, PATCH);
    method!(delete, DELETE);

    fn route<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.inner = self
            .inner
            .route(web::route().method(method.clone()).to(handler));
        self.methods.push(method);
        self
    }
}
