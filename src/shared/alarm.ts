/**
 * The wait of a background loop that polls and can be nudged (webhook deliveries, LFS
 * publishing): it ends after `ms`, or at once when woken, whichever comes first. A wake while
 * nothing waits is dropped: the loop looks for work before it waits again.
 */
export class Alarm {
  private ring: (() => void) | undefined;

  wait(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.stop(resolve), ms);
      timer.unref();
      this.ring = () => {
        clearTimeout(timer);
        this.stop(resolve);
      };
    });
  }

  wake(): void {
    this.ring?.();
  }

  private stop(resolve: () => void): void {
    this.ring = undefined;
    resolve();
  }
}
