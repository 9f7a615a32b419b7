//! Does nothing on every request and response: what any proxy-wasm filter costs.
//!
//! Diagnostics (plugin configuration `<op>:<n>` or `<op>:<n>,<op>:<n>...`): the filter
//! does exactly that host call `n` times per request and nothing else, so
//! `(cost(diag) - cost(empty)) / n` is what one such call costs inside Envoy. `make bench`
//! uses them for the attribution table (README "Performance"). Operations:
//!
//! - `header-read`: `get_map_value(request, "cookie")`, a value comes back (so it also pays
//!   the `proxy_on_memory_allocate` callback and the copy into the VM)
//! - `header-read-missing`: the same for an absent header: no value, no callback
//! - `header-write`: `set_map_value(request, "x-diag-<i%2>", 24 bytes)`
//! - `response-header-remove`: `remove_map_value(response, "x-diag-absent")`
//! - `property`: `get_property(xds.cluster_name)` on the request
//! - `response-property`: `get_property(upstream.address)` on the response
//! - `clock`: `get_current_time`
//! - `metric`: `increment_metric` on one counter
//! - `set-two-headers` / `read-two-properties`: the older two-call diagnostics.
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(Root { plan: Rc::new(Plan::default()) }));
}}

#[derive(Default)]
struct Plan {
    header_read: usize,
    header_read_missing: usize,
    header_write: usize,
    response_header_remove: usize,
    property: usize,
    response_property: usize,
    clock: usize,
    metric: usize,
    counter: Option<u32>,
}

impl Plan {
    fn parse(config: &str) -> Plan {
        let mut plan = Plan::default();
        for item in config.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (op, n) = item.split_once(':').unwrap_or((item, "1"));
            let n: usize = n.parse().unwrap_or(1);
            match op {
                "header-read" => plan.header_read += n,
                "header-read-missing" => plan.header_read_missing += n,
                "header-write" => plan.header_write += n,
                "response-header-remove" => plan.response_header_remove += n,
                "property" => plan.property += n,
                "response-property" => plan.response_property += n,
                "clock" => plan.clock += n,
                "metric" => plan.metric += n,
                "set-two-headers" => plan.header_write += 2,
                "read-two-properties" => {
                    plan.property += 1;
                    plan.response_property += 1;
                }
                _ => {}
            }
        }
        if plan.metric > 0 {
            plan.counter = hostcalls::define_metric(MetricType::Counter, "diag.counter").ok();
        }
        plan
    }
}

struct Root {
    plan: Rc<Plan>,
}
impl Context for Root {}
impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten();
        self.plan = Rc::new(Plan::parse(&String::from_utf8_lossy(&config.unwrap_or_default())));
        true
    }
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Empty { plan: self.plan.clone() }))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Empty {
    plan: Rc<Plan>,
}
impl Context for Empty {}
impl HttpContext for Empty {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let p = &self.plan;
        for _ in 0..p.header_read {
            let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "cookie");
        }
        for _ in 0..p.header_read_missing {
            let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-diag-absent");
        }
        for i in 0..p.header_write {
            let name = if i % 2 == 0 { "x-diag-a" } else { "x-diag-b" };
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some("MTI3LjAuMC4xOjgwODM="));
        }
        for _ in 0..p.property {
            let _ = hostcalls::get_property(vec!["xds", "cluster_name"]);
        }
        for _ in 0..p.clock {
            let _ = hostcalls::get_current_time();
        }
        if let Some(id) = p.counter {
            for _ in 0..p.metric {
                let _ = hostcalls::increment_metric(id, 1);
            }
        }
        Action::Continue
    }
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let p = &self.plan;
        for _ in 0..p.response_property {
            let _ = hostcalls::get_property(vec!["upstream", "address"]);
        }
        for _ in 0..p.response_header_remove {
            let _ = hostcalls::remove_map_value(MapType::HttpResponseHeaders, "x-diag-absent");
        }
        Action::Continue
    }
}
