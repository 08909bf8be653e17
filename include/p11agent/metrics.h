/*
 * p11agent: the metrics listener (agent/metrics.c, p11agent.conf(5)
 * [agent] metrics, docs/control-protocol.md).
 *
 * metrics = tcp:ADDRESS:PORT or unix:/PATH serves GET /metrics over
 * HTTP/1.0 and 1.1 with the text that p11agent status --prometheus gives
 * (Content-Type: text/plain; version=0.0.4): one request per connection,
 * answered, then closed.  Other paths get 404, other methods 405, a
 * malformed request 400, an HTTP version other than 1.x 505, a request
 * longer than METRICS_MAX_REQUEST bytes 431, and a client that has not
 * sent its request within METRICS_READ_MS 408; at most
 * METRICS_MAX_CLIENTS at once, the others 503.  Nothing blocks the loop.
 * A TCP address must be a loopback one unless allow-remote-listen = yes
 * in [agent]; a Unix socket is mode 0600 in a directory of mode 0700
 * (agent/listen.c).
 */
#ifndef P11AGENT_METRICS_H
#define P11AGENT_METRICS_H

struct agent;

#define METRICS_MAX_CLIENTS	32
#define METRICS_MAX_REQUEST	8192		/* request line + headers */
#define METRICS_READ_MS		3000		/* for the whole request */
#define METRICS_WRITE_MS	10000		/* to take the answer */
#define METRICS_MAX_BODY	(4 * 1024 * 1024)

/*
 * Opens the listener of the configuration's [agent] metrics, if any,
 * and says "metrics ADDRESS" on ready_fd (-1: none).  0, or < 0 with the
 * reason logged, naming the configuration line.
 */
int	 metrics_open(struct agent *, int ready_fd);
/* From the agent's tick: the clients' deadlines. */
void	 metrics_tick(long now);
/* Closes every client and the listener (a Unix socket is removed). */
void	 metrics_close(void);

#endif
