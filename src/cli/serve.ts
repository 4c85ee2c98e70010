import { parseArgs } from 'node:util';
import { Broker } from '../broker.ts';
import { loadConfig } from '../config/load.ts';
import { ConfigReloader } from '../config/reload.ts';
import { listenProblem, parseListen } from '../config/listen.ts';
import { metricsListenProblem } from '../config/metrics.ts';
import type { ListenAddress, WardenConfig } from '../config/types.ts';
import { WardenError } from '../errors.ts';
import { startHttpFront } from '../front/http.ts';
import { serveAgentOverStdio } from '../front/stdio.ts';

const HELP = `Usage: mcp-warden serve --config FILE --stdio --agent NAME [--metrics HOST:PORT]
       mcp-warden serve --config FILE --http [--listen HOST:PORT] [--metrics HOST:PORT]

--stdio      Serve one agent on standard input/output. This is what an MCP host
             (Claude Desktop, Claude Code, Cursor, VS Code) starts as its server.
             --agent names the agent in the config whose grants apply.
--http       Serve Streamable HTTP at http://HOST:PORT/mcp. Each agent authenticates
             with its bearer token (agents.<name>.tokenSha256 holds the token's hash).
--listen     Address for --http. Default: http.listen in the config, else 127.0.0.1:7070.
             A non-loopback address needs http.allowedHosts in the config.
--metrics    Serve Prometheus metrics and health at http://HOST:PORT/metrics, /healthz and
             /readyz, apart from the agents' listener. Default: metrics.listen when the
             config has a metrics section (127.0.0.1:9464 unless it says otherwise); off
             otherwise. A non-loopback address needs metrics.allowNonLoopback: true.
             Port 0 picks a free port; the address is printed on standard error. With
             --http a metrics address that cannot be bound stops the broker; with --stdio
             (a host may start several brokers from one config) it is only reported.
--config     The config file (warden.yaml). Checked fully before anything starts.

Logs go to standard error; the audit trail goes to the file the config names.

The config is reloaded while the broker runs: when the file changes, and on SIGHUP
(which also re-reads the manifests, for a newly signed release). A new config is
checked in full first; an invalid one never takes effect, and the log says why.
The kill switch and approvals are separate commands (mcp-warden killswitch,
mcp-warden approvals) that act on a running broker within a second.
`;

export async function runServe(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string' },
      stdio: { type: 'boolean' },
      http: { type: 'boolean' },
      agent: { type: 'string' },
      listen: { type: 'string' },
      metrics: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length > 0) throw new WardenError('WARDEN_USAGE', `unexpected argument "${positionals[0]}"`);
  if (values.config === undefined) throw new WardenError('WARDEN_USAGE', 'serve needs --config FILE');
  if (values.stdio === values.http) throw new WardenError('WARDEN_USAGE', 'serve needs exactly one of --stdio or --http');
  if (values.stdio && values.agent === undefined) throw new WardenError('WARDEN_USAGE', '--stdio needs --agent NAME');
  if (values.http && values.agent !== undefined) throw new WardenError('WARDEN_USAGE', '--agent applies to --stdio only; over HTTP the token names the agent');
  if (values.stdio && values.listen !== undefined) throw new WardenError('WARDEN_USAGE', '--listen applies to --http only');

  // Until the reloader is ready, a SIGHUP must not end the process (Node's default).
  let onHangup = () => undefined as void;
  const hangup = () => onHangup();
  process.on('SIGHUP', hangup);
  // read-write: accepted manifests enter the history, so an older release is refused later.
  const config = loadConfig(values.config, { state: 'read-write' });
  let listen = config.http.listen;
  if (values.listen !== undefined) {
    const parsed = parseListen(values.listen);
    if (!parsed) throw new WardenError('WARDEN_USAGE', `--listen expects HOST:PORT or [IPV6]:PORT, got "${values.listen}"`);
    const problem = listenProblem(parsed, config.http.allowedHosts);
    if (problem) throw new WardenError('WARDEN_USAGE', `--listen: ${problem}`);
    listen = parsed;
  }
  const metricsListen = metricsAddress(config, values.metrics, values.http ? listen : undefined);
  const agentName = values.agent;
  if (agentName !== undefined && !config.agents.has(agentName)) {
    throw new WardenError('WARDEN_AGENT_UNKNOWN', `agent "${agentName}" is not in ${config.file}; agents: ${[...config.agents.keys()].join(', ') || 'none'}`);
  }
  for (const warning of config.warnings) process.stderr.write(`mcp-warden: warning: ${warning}\n`);
  for (const [server, rejection] of config.rejected) {
    process.stderr.write(`mcp-warden: manifest refused [${rejection.reason}]: server ${server} (${rejection.file}): ${rejection.message}; its tools do not exist for agents\n`);
  }

  const metrics = metricsListen ? new (await import('../metrics/broker-metrics.ts')).BrokerMetrics() : undefined;
  const broker = new Broker(config, metrics ? { metrics } : {});
  await broker.start();
  const reloader = new ConfigReloader(broker, config.file);
  reloader.watch();
  onHangup = () => void reloader.reload('signal');
  if (!broker.audit.healthy) {
    await broker.close();
    throw new WardenError('WARDEN_AUDIT_UNWRITABLE', `cannot write the audit trail ${config.audit.file}; the broker does not serve without it`, { file: config.audit.file });
  }

  let metricsListener: { readonly url: string; close(): Promise<void> } | undefined;
  if (metrics && metricsListen) {
    const { startMetricsListener } = await import('../metrics/listener.ts');
    try {
      metricsListener = await startMetricsListener({ scrape: () => metrics.scrape(), ready: () => broker.ready }, metricsListen, { allowedHosts: config.metrics.allowedHosts, logger: broker.logger });
      process.stderr.write(`mcp-warden: metrics at ${metricsListener.url}/metrics, health at ${metricsListener.url}/healthz and /readyz\n`);
    } catch (error) {
      if (agentName === undefined) {
        reloader.close();
        await broker.close();
        throw error;
      }
      process.stderr.write(`mcp-warden: warning: ${(error as Error).message}; serving without metrics\n`);
    }
  }

  let stopFront: () => Promise<void>;
  if (agentName !== undefined) {
    const handle = serveAgentOverStdio(broker, agentName);
    stopFront = () => handle.close();
    process.stdin.on('end', () => void shutdown('stdin closed'));
  } else {
    const front = await startHttpFront(broker, listen).catch(async (error: unknown) => {
      await metricsListener?.close();
      await broker.close();
      throw error;
    });
    stopFront = () => front.close();
    process.stderr.write(`mcp-warden: serving Streamable HTTP at ${front.url}\n`);
  }

  let stopping = false;
  const exit = Promise.withResolvers<number>();
  async function shutdown(reason: string): Promise<void> {
    if (stopping) return;
    stopping = true;
    broker.logger.info({ reason }, 'shutting down');
    reloader.close();
    process.off('SIGHUP', hangup);
    await stopFront().catch(() => undefined);
    await broker.close();
    // Last, so /readyz answers 503 while the broker stops.
    await metricsListener?.close().catch(() => undefined);
    exit.resolve(0);
  }
  process.once('SIGINT', () => void shutdown('SIGINT'));
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  return exit.promise;
}

/**
 * Where the metrics listener goes: --metrics, else the config's metrics section, else
 * nowhere. The address is checked like the config's (loopback unless allowed, never the
 * agents' listener, which --listen may have moved).
 */
function metricsAddress(config: WardenConfig, flag: string | undefined, http: ListenAddress | undefined): ListenAddress | undefined {
  let address = config.metrics.enabled ? config.metrics.listen : undefined;
  if (flag !== undefined) {
    address = parseListen(flag);
    if (!address) throw new WardenError('WARDEN_USAGE', `--metrics expects HOST:PORT or [IPV6]:PORT, got "${flag}"`);
  }
  if (!address) return undefined;
  const problem = metricsListenProblem(address, config.metrics, http);
  if (problem) throw new WardenError('WARDEN_USAGE', `${flag === undefined ? 'metrics.listen' : '--metrics'}: ${problem}`);
  return address;
}
