mod proto {
    tonic::include_proto!("reprise.v1");
}
fn main(){}
