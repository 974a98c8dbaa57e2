package remote

// Reached is RemoteIP and RemotePort, for code that holds the connection
// as an interface (ops.Host).
func (c *Client) Reached() (ip string, port int) { return c.RemoteIP, c.RemotePort }
