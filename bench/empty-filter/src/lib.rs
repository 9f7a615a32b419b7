//! Does nothing on every request and response: what any proxy-wasm filter costs.
//! Diagnostics (plugin configuration): `set-two-headers` sets two request headers per
//! request and nothing else; `read-two-properties` reads `xds.cluster_name` on the request
//! and `upstream.address` on the response and nothing else.
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(Root { set_headers: false, read_properties: false }));
}}

struct Root {
    set_headers: bool,
    read_properties: bool,
}
impl Context for Root {}
impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten();
        self.set_headers = config.as_deref() == Some(b"set-two-headers".as_slice());
        self.read_properties = config.as_deref() == Some(b"read-two-properties".as_slice());
        true
    }
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Empty { set_headers: self.set_headers, read_properties: self.read_properties }))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Empty {
    set_headers: bool,
    read_properties: bool,
}
impl Context for Empty {}
impl HttpContext for Empty {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.set_headers {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-diag-a", Some("0123456789abcdef"));
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-diag-b", Some("MTI3LjAuMC4xOjgwODM="));
        }
        if self.read_properties {
            let _ = hostcalls::get_property(vec!["xds", "cluster_name"]);
        }
        Action::Continue
    }
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if self.read_properties {
            let _ = hostcalls::get_property(vec!["upstream", "address"]);
        }
        Action::Continue
    }
}
