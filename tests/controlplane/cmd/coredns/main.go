// Command coredns is CoreDNS, the cluster DNS of ControlPlane(node=True) in
// etcdcron.testing, built from its own Go module (github.com/coredns/coredns, pinned
// in go.mod next to this file) with only the plugins that node's Corefile uses (bind, errors, health, ready, kubernetes, loadbalance, log): it
// answers for cluster.local from the API server (Services, headless Services'
// per-pod names such as etcd-0.etcd.<namespace>.svc) and forwards nothing anywhere.
//
// A module of its own (not part of ../../go.mod) so that CoreDNS's dependency versions
// never move those of the pinned Kubernetes release.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
