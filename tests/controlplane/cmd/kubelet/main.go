// Command kubelet is Kubernetes' node agent, built from the pinned k8s.io/kubernetes
// release in ../../go.mod (same code as upstream's cmd/kubelet). Used by
// ControlPlane(node=True) in etcdcron.testing.
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // for client metric registration
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	command := app.NewKubeletCommand(context.Background())
	os.Exit(cli.Run(command))
}
