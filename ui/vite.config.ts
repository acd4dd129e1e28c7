import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

// The gateway serves dist/ at / (embedded in the core binary); the desktop app loads it too.
export default defineConfig({
  plugins: [svelte()],
  build: { target: 'es2022', outDir: 'dist', emptyOutDir: true, sourcemap: false },
  server: {
    // `npm run dev` against a running gateway: same-origin through the proxy.
    proxy: { '/api': 'http://127.0.0.1:11391', '/pair': 'http://127.0.0.1:11391', '/healthz': 'http://127.0.0.1:11391' },
  },
  test: { environment: 'node', include: ['src/**/*.test.ts'] },
});
