/** The Parley mark (same drawing as the PWA icons, pwa/scripts/make-icons.mjs). */
export function Logo(props: { size: number }) {
  return (
    <svg class="logo" width={props.size} height={props.size} viewBox="0 0 64 64" aria-hidden="true">
      <rect class="logo-bg" width="64" height="64" rx="14" />
      <path
        class="logo-back"
        d="M27 16h23a5 5 0 0 1 5 5v10a5 5 0 0 1-5 5h-1l1 7-7-7H27a5 5 0 0 1-5-5V21a5 5 0 0 1 5-5z"
      />
      <path
        class="logo-front"
        d="M14 27h26a5 5 0 0 1 5 5v11a5 5 0 0 1-5 5H24l-8 7 1-7h-3a5 5 0 0 1-5-5V32a5 5 0 0 1 5-5z"
      />
    </svg>
  );
}
