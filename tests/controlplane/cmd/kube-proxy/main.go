// Command kube-proxy is Kubernetes' Service proxy, built from the pinned
// k8s.io/kubernetes release in ../../go.mod (same code as upstream's cmd/kube-proxy).
// ControlPlane(node=True) runs it in iptables mode so that ClusterIP Services (the
// `kubernetes` Service for in-cluster clients among them) work as on a real cluster.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // for client metric registration
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	command := app.NewProxyCommand()
	os.Exit(cli.Run(command))
}
