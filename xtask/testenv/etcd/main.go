// Command etcd is the etcd server that kube-apiserver v1.37 pairs with (kubeadm's
// DefaultEtcdVersion 3.7.0), built from the official module for Pequod's test control plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
