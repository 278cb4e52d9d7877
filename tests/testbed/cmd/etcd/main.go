// Command etcd is etcd's own server entry point, built inside this module because
// `go install` refuses modules that carry replace directives.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
