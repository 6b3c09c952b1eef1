/**
 * A real nginx for tests, in front of a gitstratum server: started in the foreground under a
 * temporary prefix (configuration, pid, logs, temp directories all there) on a free port of
 * 127.0.0.1. scripts/test.sh installs Debian's nginx when it is missing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Nginx {
  url: string;
  errorLog(): Promise<string>;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** nginx with the given `server` block directives; resolves once it answers. */
export async function startNginx(prefix: string, server: string): Promise<Nginx> {
  const tmp = (name: string) => path.join(prefix, 'tmp', name);
  await mkdir(path.join(prefix, 'tmp'), { recursive: true });
  const port = await freePort();
  const conf = path.join(prefix, 'nginx.conf');
  const errorLog = path.join(prefix, 'error.log');
  await writeFile(
    conf,
    `daemon off;
${process.getuid?.() === 0 ? 'user root;' : ''}
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${errorLog} warn;
events { worker_connections 128; }
http {
  access_log off;
  client_body_temp_path ${tmp('body')};
  proxy_temp_path ${tmp('proxy')};
  fastcgi_temp_path ${tmp('fastcgi')};
  scgi_temp_path ${tmp('scgi')};
  uwsgi_temp_path ${tmp('uwsgi')};
  client_max_body_size 0;
  server {
    listen 127.0.0.1:${port};
${server}
  }
}
`,
  );
  const child: ChildProcess = spawn('nginx', ['-p', prefix, '-c', conf, '-e', errorLog], {
    env: { PATH: `${process.env['PATH'] ?? ''}:/usr/sbin:/sbin` },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited at start: ${stderr}`);
    if (await fetch(url).then(() => true, () => false)) break;
    if (Date.now() > deadline) throw new Error(`nginx did not answer within 15 s: ${stderr}`);
    await sleep(50);
  }
  return {
    url,
    errorLog: () => readFile(errorLog, 'utf8').catch(() => ''),
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGQUIT');
      await exited;
    },
  };
}
