//! Adds the worker's bearer token to every call, when it has one.

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use crate::proto::worker_service_client::WorkerServiceClient;

/// The worker's client to the WorkerService.
pub(crate) type Client = WorkerServiceClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub(crate) fn new(token: Option<&str>) -> anyhow::Result<Self> {
        let value = token
            .map(|t| format!("Bearer {t}").parse().map_err(|_| anyhow::anyhow!("the token is not valid header text")))
            .transpose()?;
        Ok(Bearer(value))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}
