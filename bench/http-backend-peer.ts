/**
 * The peer: `git http-backend` behind nginx and fcgiwrap, the usual way to self-host Git Smart
 * HTTP. Everything lives under one temporary prefix: nginx listens on a free port of
 * 127.0.0.1, fcgiwrap on a unix socket with pre-forked workers, and a wrapper
 * (cgi-rusage.pl) between fcgiwrap and the backend reports the backend's CPU, which would
 * otherwise be lost (fcgiwrap ignores SIGCHLD; see /work/shared/BENCHMARKING.md).
 *
 * Server CPU = CPU of the nginx and fcgiwrap process trees + what the wrapper reports.
 *
 * `startNginx` (nginx alone under a temp prefix) also serves the LFS benchmark's static peer.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { childrenOf, freePort, run, stop, track } from './processes.js';
import { childPids, ignoresSigchld, ownCpuSeconds, peakRss, resetPeakRss, treeCpuSeconds, treeOf, waitForTree } from './proc-stats.js';

export interface PeerOptions {
  nginx: string;
  fcgiwrap: string;
  /** Pre-forked fcgiwrap workers; at least the concurrency tested. */
  workers: number;
  /** git config set in every repository the peer serves (to match gitstratum's). */
  repoConfig: [string, string][];
  /** HOME and GIT_CONFIG_NOSYSTEM for git, as the gitstratum server gets them. */
  gitHome: string;
}

export interface HttpBackendPeer {
  url: string;
  /** The repository directory served at `<url>/alice/bench/<name>.git`. */
  repoPath(name: string): string;
  createRepo(name: string): Promise<string>;
  cpuSeconds(): number;
  /** CPU of the nginx and fcgiwrap processes themselves. */
  ownCpuSeconds(): number;
  /** Whether the wrapper's figures are added (false if fcgiwrap reaps its CGIs itself). */
  addsWrapperCpu: boolean;
  waitIdle(): Promise<void>;
  resetPeak(): boolean;
  /** Largest VmHWM among the nginx and fcgiwrap processes. */
  peakRss(): number;
  stop(): Promise<void>;
}

export function httpBackendPath(): string {
  return path.join(execFileSync('git', ['--exec-path'], { encoding: 'utf8' }).trim(), 'git-http-backend');
}

export interface Nginx {
  pid: number;
  port: number;
  /** http://127.0.0.1:<port> */
  url: string;
  stop(): Promise<void>;
}

/**
 * nginx in the foreground under `prefix` (configuration, pid file, error log and temp
 * directories all there), listening on a free port of 127.0.0.1 with the given `server`
 * directives and extra `http` ones. Registered for stopping by PID; resolves once its workers
 * run (the master has bound the port before it forks them).
 */
export async function startNginx(nginxBin: string, prefix: string, blocks: { main?: string; http?: string; server: string }, env: NodeJS.ProcessEnv): Promise<Nginx> {
  const tmp = (name: string) => path.join(prefix, 'tmp', name);
  await mkdir(path.join(prefix, 'tmp'), { recursive: true });
  const port = await freePort();
  const conf = path.join(prefix, 'nginx.conf');
  await writeFile(
    conf,
    `# Written by bench/http-backend-peer.ts for one benchmark run.
daemon off;
master_process on;
worker_processes auto;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
${blocks.main ?? ''}
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${tmp('body')};
  fastcgi_temp_path ${tmp('fastcgi')};
  proxy_temp_path ${tmp('proxy')};
  scgi_temp_path ${tmp('scgi')};
  uwsgi_temp_path ${tmp('uwsgi')};
  client_max_body_size 0;
${blocks.http ?? ''}
  server {
    listen 127.0.0.1:${port};
${blocks.server}
  }
}
`,
  );
  const child = spawn(nginxBin, ['-p', prefix, '-c', conf, '-e', path.join(prefix, 'error.log')], {
    env: { PATH: env['PATH'] },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const pid = child.pid!;
  track(pid, 'nginx');
  const deadline = Date.now() + 15_000;
  while (childPids(pid).length === 0) {
    if (child.exitCode !== null) throw new Error(`nginx exited at start; see ${prefix}/error.log`);
    if (Date.now() > deadline) throw new Error(`nginx not ready within 15 s; see ${prefix}/error.log`);
    await sleep(50);
  }
  return { pid, port, url: `http://127.0.0.1:${port}`, stop: () => stop(pid) };
}

function fcgiServer(prefix: string, opts: { wrapper: string; projectRoot: string; rusageLog: string; gitHome: string }): string {
  return `    location / {
      fastcgi_pass unix:${prefix}/fcgiwrap.sock;
      fastcgi_read_timeout 600s;
      fastcgi_send_timeout 600s;
      # Stream the pack to the client as git writes it instead of spooling it to temp files.
      fastcgi_buffering off;
      fastcgi_param SCRIPT_FILENAME ${opts.wrapper};
      fastcgi_param PATH_INFO $uri;
      fastcgi_param QUERY_STRING $query_string;
      fastcgi_param REQUEST_METHOD $request_method;
      fastcgi_param CONTENT_TYPE $content_type;
      fastcgi_param CONTENT_LENGTH $content_length;
      fastcgi_param SERVER_PROTOCOL $server_protocol;
      fastcgi_param GATEWAY_INTERFACE CGI/1.1;
      fastcgi_param REMOTE_ADDR $remote_addr;
      fastcgi_param GIT_PROJECT_ROOT ${opts.projectRoot};
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param GIT_CONFIG_NOSYSTEM 1;
      fastcgi_param HOME ${opts.gitHome};
      fastcgi_param BENCH_HTTP_BACKEND ${httpBackendPath()};
      fastcgi_param BENCH_RUSAGE_LOG ${opts.rusageLog};
    }`;
}

export async function startHttpBackend(root: string, prefix: string, opts: PeerOptions, env: NodeJS.ProcessEnv): Promise<HttpBackendPeer> {
  const projectRoot = path.join(prefix, 'repos');
  const rusageLog = path.join(prefix, 'rusage.log');
  const wrapper = path.join(root, 'bench', 'cgi-rusage.pl');
  await mkdir(path.join(projectRoot, 'alice', 'bench'), { recursive: true });
  await writeFile(rusageLog, '');

  const socket = path.join(prefix, 'fcgiwrap.sock');
  const fcgi = spawn(opts.fcgiwrap, ['-c', String(opts.workers), '-f', '-s', `unix:${socket}`], {
    env: { PATH: env['PATH'] },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const fcgiPid = fcgi.pid!;
  // The parent leaves its pre-forked workers running on TERM: they are stopped by PID first.
  track(fcgiPid, 'fcgiwrap', { alsoStop: childrenOf(fcgiPid) });

  // Ready when fcgiwrap has its workers and its socket; then nginx in front of it.
  const deadline = Date.now() + 15_000;
  while (childPids(fcgiPid).length < opts.workers || !existsSync(socket)) {
    if (fcgi.exitCode !== null) throw new Error('fcgiwrap exited at start');
    if (Date.now() > deadline) throw new Error('fcgiwrap not ready within 15 s');
    await sleep(50);
  }
  // Run as root, nginx's workers drop to `nobody`: let them reach the socket in our private prefix.
  await chmod(socket, 0o666);
  const fcgiBlock = fcgiServer(prefix, { wrapper, projectRoot, rusageLog, gitHome: opts.gitHome });
  const nginx = await startNginx(opts.nginx, prefix, { server: fcgiBlock }, env);
  const nginxPid = nginx.pid;
  const roots = [nginxPid, fcgiPid];
  const resident = new Set(treeOf(roots).map((p) => p.pid));
  const addsWrapperCpu = childPids(fcgiPid).every(ignoresSigchld);

  const wrapperCpu = () =>
    readFileSync(rusageLog, 'utf8')
      .split('\n')
      .filter(Boolean)
      .reduce((sum, line) => {
        const [, user, sys] = line.split(' ');
        return sum + Number(user) + Number(sys);
      }, 0);

  const repoPath = (name: string) => path.join(projectRoot, 'alice', 'bench', `${name}.git`);
  return {
    url: nginx.url,
    repoPath,
    async createRepo(name) {
      const dir = repoPath(name);
      const gitEnv = { ...env, HOME: opts.gitHome, GIT_CONFIG_NOSYSTEM: '1' };
      await run('git', ['init', '--bare', '-q', '--initial-branch=main', dir], { env: gitEnv });
      for (const [key, value] of [...opts.repoConfig, ['http.receivepack', 'true'] as [string, string]]) {
        await run('git', ['--git-dir', dir, 'config', key, value], { env: gitEnv });
      }
      return dir;
    },
    cpuSeconds: () => treeCpuSeconds(roots) + (addsWrapperCpu ? wrapperCpu() : 0),
    ownCpuSeconds: () => ownCpuSeconds(resident),
    addsWrapperCpu,
    waitIdle: () => waitForTree(roots, resident),
    resetPeak: () => [...resident].map(resetPeakRss).every(Boolean),
    peakRss: () => Math.max(...[...resident].map((pid) => peakRss(pid))),
    async stop() {
      await stop(nginxPid);
      await stop(fcgiPid);
    },
  };
}
