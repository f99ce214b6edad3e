//! Envoy's gRPC Access Log Service (`envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs`, Istio's
//! `envoyHttpAls` and `envoyTcpAls` providers): HTTP and TCP entries become request records, attributed to
//! the proxy named by the stream's first message (`identifier.node.id`).

pub mod convert;
pub mod grpc;
