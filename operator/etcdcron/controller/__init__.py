"""The Kubernetes operator: DistributedCronJob resources mirrored into etcd, fired by the pool."""
