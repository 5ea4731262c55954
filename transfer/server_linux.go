package transfer

import (
	"google.golang.org/grpc"

	transferv1 "github.com/migratehq/migrate/api/transfer/v1"
)

// RegisterServer serves r as the Transfer service on s. s must only accept
// authenticated peers (the agent's peer server requires mutual TLS).
func RegisterServer(s grpc.ServiceRegistrar, r *Receiver) {
	transferv1.RegisterTransferServer(s, &server{r: r})
}

// server is the gRPC edge: it forwards to the Receiver and converts errors.
type server struct {
	transferv1.UnimplementedTransferServer
	r *Receiver
}

var _ transferv1.TransferServer = (*server)(nil)

func (s *server) Send(st transferv1.Transfer_SendServer) error {
	return toStatus(s.r.receive(st))
}
