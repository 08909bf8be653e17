/*
 * p11agent: the command line: run, check, tokens.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "p11agent/error.h"
#include "p11agent/log.h"
#include "p11agent/metrics.h"
#include "p11agent/policy.h"
#include "p11agent/proto.h"
#include "p11agent/agent.h"
#include "p11agent/audit.h"
#include "p11agent/config.h"
#include "p11agent/control.h"
#include "p11agent/enroll.h"
#include "p11agent/identity.h"
#include "p11agent/loop.h"
#include "p11agent/reload.h"
#include "p11agent/resolve.h"
#include "p11agent/sd.h"
#include "p11agent/bufpool.h"
#include "p11agent/wbio.h"
#include "p11agent/tls.h"
#include "p11agent/tunnel.h"

#define LIST_TIMEOUT_MS	60000

static struct agent	 agent;

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: p11agent run [-q | -v] [--log TARGET] [-c FILE] [--policies DIR]\n"
	    "                [--ready-fd N]\n"
	    "       p11agent check [-c FILE] [--policies DIR]\n"
	    "       p11agent tokens [-m MODULE] [--pin SOURCE] [URI]\n"
	    "       p11agent lock [-c FILE] [--control PATH] [--idle SECONDS]\n"
	    "       p11agent unlock [-c FILE] [--control PATH]\n"
	    "       p11agent status [--json | --prometheus] [-c FILE]\n"
	    "                [--control PATH]\n"
	    "       p11agent reload [-c FILE] [--control PATH]\n"
	    "       p11agent enroll --key URI --type TYPE --subject DN "
	    "[--san NAME]...\n"
	    "                [--pin SOURCE] [-m MODULE] [-o FILE]\n"
	    "       p11agent import-cert --key URI [--pin SOURCE] [-m MODULE] "
	    "FILE\n"
	    "       p11agent --help | --version\n"
	    "\n"
	    "  run     serve the tunnels of the configuration\n"
	    "  check   validate the configuration, open each identity on its\n"
	    "          token and make a test signature\n"
	    "  tokens  list PKCS#11 modules, tokens, keys and certificates\n"
	    "          with their pkcs11: URIs, or only the tokens matching\n"
	    "          URI; private keys show after a login with --pin\n"
	    "          file:PATH or env:NAME (to one token only)\n"
	    "  lock    log the running agent's tokens out (the next signature\n"
	    "          asks for the PIN again); --idle SECONDS: lock after that\n"
	    "          long without a signature (0: never)\n"
	    "  unlock  log the running agent's tokens in again now\n"
	    "  status  what the running agent serves: tunnels and their\n"
	    "          counters, identities, token helpers; --json for\n"
	    "          programs, --prometheus for metrics (exit 3: no\n"
	    "          agent runs)\n"
	    "  reload  have the running agent read its configuration again:\n"
	    "          new connections use it, open ones finish as they are;\n"
	    "          a configuration with an error changes nothing (exit 1)\n"
	    "  enroll  generate a key pair on the token and write a\n"
	    "          certificate request signed by it\n"
	    "  import-cert  write a certificate and its chain beside its key\n"
	    "\n"
	    "The configuration is ~/.config/p11agent/agent.conf unless -c is\n"
	    "given; the administrator's policies are the *.policy files of\n"
	    "%s unless --policies is given; see\n"
	    "p11agent(1), p11agent.conf(5) and p11agent.policy(5).\n",
	    policy_default_dir());
}

static char *
default_config(void)
{
	const char	*xdg = getenv("XDG_CONFIG_HOME"), *home;
	char		*p = NULL;

	if (xdg != NULL && *xdg == '/') {
		if (asprintf(&p, "%s/p11agent/agent.conf", xdg) == -1)
			return NULL;
	} else if ((home = getenv("HOME")) != NULL) {
		if (asprintf(&p, "%s/.config/p11agent/agent.conf", home) == -1)
			return NULL;
	}
	return p;
}

static int
load_config(const char *path)
{
	char	 err[CONFIG_MAX_ERR], *def = NULL;
	int	 r;

	if (path == NULL && (path = def = default_config()) == NULL) {
		log_err("no configuration: use -c FILE");
		return 1;
	}
	r = config_load(path, &agent.cfg, err, sizeof(err));
	free(def);
	if (r != 0) {
		log_err("%s", err);
		return 1;
	}
	/* the administrator's policies: enforced once the identities are
	 * open (policy_apply) */
	if (policy_load_dir(NULL, &agent.cfg->policies, err,
	    sizeof(err)) != 0) {
		log_err("%s", err);
		return 1;
	}
	return 0;
}

/* The policies, once the identities opened: 0, or 1 if one is broken. */
static int
apply_policies(struct agent *a)
{
	int	 n;

	if ((n = policy_apply(a)) == 0)
		return 0;
	log_err("%s: %d policy violation%s (above): the administrator's "
	    "policies allow less than this configuration asks for", a->cfg->path,
	    n, n == 1 ? "" : "s");
	return 1;
}

static int	 exit_status;
static int	 ready_fd = -1;

static void
tick(long now)
{
	helpers_tick(&agent, now);
	tunnels_tick(&agent, now);
	control_tick(&agent, now);
	reload_tick(&agent, now);
	sd_tick(&agent, now);
	metrics_tick(now);
}

/* SIGHUP reloads, SIGTERM and SIGINT drain (agent/reload.c). */
static void
on_signal(int signo)
{
	reload_signal(&agent, signo);
}

/* Every identity has answered: serve, or stop if one could not open. */
static void
run_opened(struct agent *a, int failed)
{
	if (failed || apply_policies(a) != 0 ||
	    tunnels_start(a, ready_fd) != 0) {
		exit_status = 1;
		loop_stop();
		return;
	}
	if (ready_fd != -1) {
		if (write(ready_fd, "ready\n", 6) != 6)
			log_warn_sys("ready fd");
		close(ready_fd);
		ready_fd = -1;
	}
	sd_ready(a);
	log_info("ready");
}

/* The agent holds no PIN it could dump, but its memory is still ours. */
static int
harden(void)
{
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1) {
		log_err_sys("prctl(PR_SET_DUMPABLE)");
		return -1;
	}
	return 0;
}

/* ---- the control socket (agent/control.c): run serves it */
static int
serve_control(void)
{
	char	 err[512], *path = NULL;
	int	 r;

	if ((r = control_path(agent.cfg, NULL, &path, err,
	    sizeof(err))) == P11A_ERR_CONFIG) {
		if (sd_has(SD_CONTROL_NAME))
			return control_open(&agent, NULL);
		/* a CI job or a service with no session: tunnels still work */
		log_warn("%s; running without a control socket, so p11agent "
		    "lock and unlock cannot reach this agent", err);
		return 0;
	}
	if (r != 0) {
		log_err("%s", err);
		return -1;
	}
	r = control_open(&agent, path);
	free(path);
	return r;
}

/* lock, unlock: one request to the running agent */
static int
cmd_control(const char *config, const char *opt, const char *req,
    int timeout_ms)
{
	char	 err[CONFIG_MAX_ERR], *path = NULL, *def = NULL;
	int	 r = CONTROL_EXIT_FAILED;

	/* without --control, the configuration may name the socket */
	if (opt == NULL && config == NULL && (def = default_config()) !=
	    NULL && access(def, F_OK) == 0)
		config = def;
	if (opt == NULL && config != NULL &&
	    config_load(config, &agent.cfg, err, sizeof(err)) != 0) {
		log_err("%s", err);
		if (strcmp(req, "reload") == 0)
			log_err("nothing was reloaded: the running agent's "
			    "configuration stays");
		goto out;
	}
	if (control_path(agent.cfg, opt, &path, err, sizeof(err)) != 0) {
		log_err("%s", err);
		goto out;
	}
	r = control_request(path, req, timeout_ms);
out:
	free(path);
	free(def);
	config_free(agent.cfg);
	agent.cfg = NULL;
	return r;
}
/* ---- */

/* Loads the configuration and starts opening its identities. */
static int
start_loaded(void (*opened)(struct agent *, int), int control)
{
	if (harden() != 0 || identity_take_env_pins(&agent) != 0 ||
	    loop_init() != 0 || log_relay_start() != 0 ||
	    (control && (serve_control() != 0 ||
	    metrics_open(&agent, ready_fd) != 0)) ||
	    resolve_init() != 0 || identity_open_start(&agent, opened) != 0)
		return -1;
	return 0;
}

static int
start(const char *path, void (*opened)(struct agent *, int), int control)
{
	if (load_config(path) != 0)
		return -1;
	return start_loaded(opened, control);
}

/*
 * Each tunnel holds two descriptors: the soft limit (often 1024) is
 * raised to the hard one, and a hard limit below what max-connections
 * needs is said.
 */
static void
raise_nofile(void)
{
	struct rlimit	 rl;
	rlim_t		 was, need;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	was = rl.rlim_cur;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			log_info("descriptor limit raised from %llu to %llu",
			    (unsigned long long)was,
			    (unsigned long long)rl.rlim_cur);
		else
			rl.rlim_cur = was;
	}
	need = (rlim_t)agent.cfg->agent.max_connections * 2 + 64;
	if (rl.rlim_cur < need)
		log_warn("the descriptor limit is %llu: fewer than the %llu "
		    "that max-connections = %d needs; raise it (ulimit -n, or "
		    "LimitNOFILE= in a systemd unit)",
		    (unsigned long long)rl.rlim_cur, (unsigned long long)need,
		    agent.cfg->agent.max_connections);
}

static int
cmd_run(const char *path)
{
	char	 err[CONFIG_MAX_ERR];
	int	 r = 1;

	/* systemd's sockets and watchdog, before any helper starts */
	if (sd_init(err, sizeof(err)) != 0) {
		log_err("%s", err);
		goto out;
	}
	if (load_config(path) != 0)
		goto out;
	if (sd_check_config(agent.cfg, err, sizeof(err)) != 0) {
		log_err("%s", err);
		goto out;
	}
	/* -q, -v and --log win over log and log-level in the file */
	log_configure((enum log_target)agent.cfg->agent.log_target,
	    agent.cfg->agent.log_level - 1);
	raise_nofile();
	if (start_loaded(run_opened, 1) != 0)
		goto out;
	/* while identities open, a signal stops the agent at once */
	loop_on_signal(on_signal);
	r = loop_run(tick) == 0 ? exit_status : 1;
	sd_stopping();
out:
	tunnels_stop(&agent);
	resolve_forget();
	helpers_fail_all(&agent);
	tunnels_reap();
	control_close(&agent);
	metrics_close();
	loop_run_deferred();	/* frees the last connections' SSLs */
	identity_close_all(&agent);
	wbio_cleanup();		/* after the last SSL that used it */
	bufpool_cleanup();
	config_free(agent.cfg);
	reload_cleanup(&agent);
	sd_cleanup();
	audit_clear();
	return r;
}

/*
 * A signature through the helper, verified with the certificate; NULL if
 * fine, else why not.
 */
static const char *
test_sign(struct identity *id)
{
	unsigned char	 msg[32], sig[1024];
	size_t		 siglen = sizeof(sig);
	char		 who[64], tok[80];
	struct audit_sig g;
	EVP_MD_CTX	*md;
	const char	*why = NULL;

	if ((md = EVP_MD_CTX_new()) == NULL)
		return "out of memory";
	RAND_bytes(msg, sizeof(msg));
	snprintf(who, sizeof(who), "p11agent check (pid %ld)", (long)getpid());
	rkey_set_requester(who, "a test signature");
	snprintf(tok, sizeof(tok), "'%s' serial %s", id->tok_label,
	    id->tok_serial);
	g = (struct audit_sig){ .identity = id->cfg->name,
	    .token = id->tok_label[0] ? tok : NULL,
	    .purpose = "p11agent check's test signature" };
	rkey_set_audit(audit_local, &g);
	if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, id->pkey) != 1 ||
	    EVP_DigestSign(md, sig, &siglen, msg, sizeof(msg)) != 1)
		why = helper_error(id->mod->helper)[0] ?
		    helper_error(id->mod->helper) :
		    "the token did not sign";
	else if (EVP_MD_CTX_reset(md) != 1 ||
	    EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL,
	    X509_get0_pubkey(id->hid.cert)) != 1 ||
	    EVP_DigestVerify(md, sig, siglen, msg, sizeof(msg)) != 1)
		why = "the signature does not verify with the certificate: "
		    "the certificate belongs to another key";
	rkey_set_audit(NULL, NULL);
	rkey_set_requester(NULL, NULL);
	EVP_MD_CTX_free(md);
	ERR_clear_error();
	return why;
}

static void
check_opened(struct agent *a, int failed)
{
	exit_status = failed;
	loop_stop();
}

static int
cmd_check(const char *path)
{
	struct identity		*id;
	struct cfg_tunnel	*t;
	SSL_CTX			*ctx;
	char			 err[512], subj[256];
	const char		*why;
	int			 bad = 1;

	if (start(path, check_opened, 0) != 0 || loop_run(tick) != 0)
		goto out;
	bad = exit_status;
	if (!bad && apply_policies(&agent) != 0)
		bad = 1;
	for (id = agent.identities; id != NULL; id = id->next) {
		if (id->pkey == NULL)
			continue;
		X509_NAME_oneline(X509_get_subject_name(id->hid.cert), subj,
		    sizeof(subj));
		if ((why = test_sign(id)) != NULL) {
			log_err("identity %s: test signature with %s failed: "
			    "%s", id->cfg->name, id->cfg->key, why);
			bad = 1;
			continue;
		}
		printf("identity %s: ok: %s key, certificate %s, test "
		    "signature verified\n", id->cfg->name, id->hid.keytype ==
		    PROTO_KEY_RSA ? "RSA" : "EC", subj);
	}
	for (t = agent.cfg->tunnels; t != NULL && !bad; t = t->next) {
		if ((ctx = tls_ctx_new(t, identity_find(&agent, t->identity),
		    err, sizeof(err))) == NULL) {
			log_err("%s:%d: [tunnel %s]: %s", agent.cfg->path,
			    t->line, t->name, err);
			bad = 1;
			continue;
		}
		SSL_CTX_free(ctx);
		printf("tunnel %s: ok\n", t->name);
	}
out:
	identity_close_all(&agent);
	config_free(agent.cfg);
	return bad;
}

static const char *
kind_name(int kind)
{
	switch (kind) {
	case PROTO_LIST_MODULE:	return "module";
	case PROTO_LIST_SLOT:	return "  slot";
	case PROTO_LIST_TOKEN:	return "    token";
	case PROTO_LIST_KEY:	return "      key";
	case PROTO_LIST_CERT:	return "      cert";
	default:		return "?";
	}
}

static int
print_list(struct pbuf *b)
{
	char	*uri, *desc;
	int	 kind;

	while (b->off < b->len && b->err == 0) {
		kind = pbuf_get_u8(b);
		uri = pbuf_get_str(b);
		desc = pbuf_get_str(b);
		if (b->err == 0) {
			printf("%s: %s\n", kind_name(kind), desc ? desc : "");
			if (uri != NULL)
				printf("%*s%s\n", kind == PROTO_LIST_MODULE ?
				    2 : kind == PROTO_LIST_TOKEN ? 6 : 8, "",
				    uri);
		}
		free(uri);
		free(desc);
	}
	return b->err;
}

static int
cmd_tokens(const char *module, const char *pin, const char *filter)
{
	struct helper		*h = NULL;
	struct helper_opts	 o;
	struct pbuf		 req, reply;
	char			 err[1024], *env[2] = { NULL, NULL }, *src = NULL;
	int			 r;

	pbuf_init(&req);
	pbuf_init(&reply);
	memset(&o, 0, sizeof(o));
	o.module = module;
	o.allow = (char *const *)&module;	/* named right here: allowed */
	o.nallow = module != NULL;
	/* --pin fd:N: read here, given to the helper as an env: PIN */
	if (pin != NULL && strncmp(pin, "fd:", 3) == 0) {
		if (identity_pin_fd(pin, "--pin", &env[0], &src) != 0)
			return 1;
		o.env = env;
		pin = src;
	}
	r = helper_start(&o, &h, err, sizeof(err));
	identity_pin_kv_free(env[0]);	/* the helper has its copy */
	if (r != 0) {
		log_err("%s", err);
		free(src);
		return 1;
	}
	pbuf_put_str(&req, pin);
	pbuf_put_str(&req, filter);
	if ((r = helper_call(h, PROTO_LIST, &req, &reply, LIST_TIMEOUT_MS)) != 0)
		log_err("%s", helper_error(h));
	else if ((r = print_list(&reply)) != 0)
		log_err_code(r, "token helper");
	pbuf_clear(&req);
	pbuf_clear(&reply);
	helper_free(h);
	free(src);
	return r != 0;
}

int
main(int argc, char *argv[])
{
	static const struct option	 opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "control", required_argument, NULL, 'C' },
		{ "idle", required_argument, NULL, 'I' },
		{ "json", no_argument, NULL, 'J' },
		{ "log", required_argument, NULL, 'L' },
		{ "policies", required_argument, NULL, 'O' },
		{ "prometheus", no_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ "module", required_argument, NULL, 'm' },
		{ "pin", required_argument, NULL, 'p' },
		{ "ready-fd", required_argument, NULL, 'r' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char	*cmd, *config = NULL, *module = NULL, *pin = NULL;
	const char	*filter = NULL, *control = NULL, *idle = NULL;
	const char	*policies = NULL;
	char		*end, req[64];
	int		 ch, verbose = 0, json = 0, logto = -1;
	enum log_target	 lt;

	/* a closed 0, 1 or 2 would be the next file opened (a socket, the
	 * configuration) and get what is meant for stdio */
	for (ch = 0; ch <= 2; ch++)
		if (fcntl(ch, F_GETFD) == -1 && errno == EBADF &&
		    open("/dev/null", ch == 0 ? O_RDONLY : O_WRONLY) != ch)
			return 1;
	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0)) {
		usage(stdout);
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
		printf("p11agent %s\n", PACKAGE_VERSION);
		return 0;
	}
	if (argc < 2 || argv[1][0] == '-') {
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	argc--;
	argv++;
	/* enrollment: commands with options of their own (agent/enroll.c) */
	if (strcmp(cmd, "enroll") == 0)
		return enroll_main(argc, argv);
	if (strcmp(cmd, "import-cert") == 0)
		return import_cert_main(argc, argv);
	while ((ch = getopt_long(argc, argv, "c:hm:p:qv", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':	config = optarg; break;
		case 'C':	control = optarg; break;
		case 'I':	idle = optarg; break;
		case 'O':	policies = optarg; break;
		case 'J':
		case 'P':
			if (json != 0 && json != (ch == 'J' ? 1 : 2)) {
				log_err("--json and --prometheus: one or "
				    "the other");
				return 2;
			}
			json = ch == 'J' ? 1 : 2;
			break;
		case 'L':
			if (log_target_parse(optarg, &lt) != 0) {
				log_err("--log: '%s' is not one of auto, "
				    "stderr, journal, syslog", optarg);
				return 2;
			}
			logto = (int)lt;
			break;
		case 'm':	module = optarg; break;
		case 'p':	pin = optarg; break;
		case 'q':	verbose = -1; break;	/* the last wins */
		case 'v':	verbose = verbose < 0 ? 1 : verbose + 1; break;
		case 'h':	usage(stdout); return 0;
		case 'V':	printf("p11agent %s\n", PACKAGE_VERSION);
				return 0;
		case 'r':
			errno = 0;
			ready_fd = (int)strtol(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || ready_fd < 3 ||
			    fcntl(ready_fd, F_SETFD, FD_CLOEXEC) == -1) {
				log_err("--ready-fd: '%s' is not a file "
				    "descriptor above 2", optarg);
				return 2;
			}
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (strcmp(cmd, "tokens") == 0 && optind == argc - 1)
		filter = argv[optind++];
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (logto >= 0 && strcmp(cmd, "run") != 0) {
		log_err("--log is for p11agent run");
		usage(stderr);
		return 2;
	}
	if (policies != NULL && strcmp(cmd, "run") != 0 &&
	    strcmp(cmd, "check") != 0) {
		log_err("--policies is for p11agent run and check");
		usage(stderr);
		return 2;
	}
	policy_dir_set(policies);
	if (logto >= 0)
		log_set_target((enum log_target)logto);
	log_init("p11agent", verbose);
	/* the administrator's directory left aside: said, every time */
	if (policies != NULL && strcmp(cmd, "run") == 0)
		log_warn("policies from %s (--policies), not from %s",
		    policies, policy_default_dir());
	if (strcmp(cmd, "run") == 0)
		return cmd_run(config);
	if (strcmp(cmd, "check") == 0)
		return cmd_check(config);
	if (strcmp(cmd, "tokens") == 0)
		return cmd_tokens(module, pin, filter);
	/* ---- requests to the running agent (agent/control.c) */
	if (strcmp(cmd, "lock") == 0 && idle != NULL) {
		if (strlen(idle) > 16 || strspn(idle, "0123456789") !=
		    strlen(idle) || *idle == '\0') {
			log_err("--idle: '%s' is not a number of seconds", idle);
			return 2;
		}
		snprintf(req, sizeof(req), "lock --idle %s", idle);
		return cmd_control(config, control, req, 60000);
	}
	if (strcmp(cmd, "lock") == 0)
		return cmd_control(config, control, "lock", 60000);
	if (strcmp(cmd, "unlock") == 0)
		return cmd_control(config, control, "unlock", 180000);
	if (strcmp(cmd, "reload") == 0)
		return cmd_control(config, control, "reload", 180000);
	if (strcmp(cmd, "status") == 0)
		return cmd_control(config, control, json == 2 ?
		    "status --prometheus" : json ? "status --json" : "status",
		    10000);
	/* ---- */
	log_err("unknown command '%s'", cmd);
	usage(stderr);
	return 2;
}
